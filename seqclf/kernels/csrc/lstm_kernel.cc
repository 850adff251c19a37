// An LSTM layer (seqclf.fast_lstm's arithmetic) as XLA:CPU custom calls.
//
// Why: under XLA:CPU each time step of the scanned cell is a dozen separate
// kernels (a dot, several elementwise fusions, slices and updates), thousands
// per training step, and small dots leave most of the FMA units idle.
// Here one call runs a layer's whole forward pass and one its whole backward
// pass. Each time step is one register-blocked matmul of [x_t, h] with
// [w_x; w_h] (packed once per call) and one pass over the gates that stays in
// registers; the backward pass also adds up the weight gradients step by
// step while the step's data is in cache. Batch rows never interact, so the
// batch is cut into slices run on XLA's intra-op thread pool. The arithmetic
// is fast_lstm's (gate order i, j, f, o; one tanh for all four gates,
// sigmoid(x) = (1 + tanh(x/2)) / 2; float32 throughout, unless the matmuls
// are asked for in bfloat16), so the two agree to float rounding
// (tests/test_lstm_kernel.py).
//
// Written with GCC/Clang vector extensions rather than intrinsics, so one
// source serves every CPU: the vector width and the matmul's register block
// are chosen below from the target's macros (the -march the kernel is built
// for; seqclf.lstm_kernel builds it for the machine that runs it, or for
// $SEQCLF_KERNEL_MARCH). A block whose accumulators do not fit the ISA's
// vector registers spills them to the stack on every FMA, so each ISA gets
// the largest block that fits (tests/test_lstm_kernel.py reads the built
// micro-kernel's disassembly for stack traffic).
//
// Shapes (row-major, time-major): x (T, B, I); w_x (I, 4H); b (4H); w_h
// (H, 4H); c, h (B, H); lengths (B) int32. H must be a multiple of 16
// (checked in Python and here). Row b's steps t >= lengths[b] are padding:
// its state stays as it was after its last valid step, its outputs there are
// zero, and the backward pass carries its state gradient through them
// unchanged with zero gate gradients (flax nn.RNN's seq_lengths).

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

// The optional matmul_precision='bfloat16' (the bfloat16 section below)
// where the target has bfloat16 dot products: AVX512_BF16's vdpbf16ps
// (Cooper Lake, Zen 4, Sapphire Rapids and later), and AMX tiles where the
// target also has those (Sapphire Rapids), AMX being the one used when
// Linux grants it.
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define SEQCLF_BF16 1
#include <immintrin.h>
#endif
#if defined(SEQCLF_BF16) && defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define SEQCLF_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Per ISA: floats per vector, and the micro-kernel's block of kMaxRows rows
// by kPanelVecs vectors, whose accumulators plus one vector of B per column
// and one broadcast of A must fit the vector registers.
#if defined(__AVX512F__)
constexpr int kLanes = 16, kMaxRows = 6, kPanelVecs = 4;  // 24+4+1 of 32 zmm
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8, kMaxRows = 6, kPanelVecs = 2;   // 12+2+1 of 16 ymm
#elif defined(__aarch64__)
constexpr int kLanes = 4, kMaxRows = 8, kPanelVecs = 3;   // 24+3+1 of 32 NEON
#else  // SSE2 or any other CPU: 128-bit vectors, 16 registers
constexpr int kLanes = 4, kMaxRows = 4, kPanelVecs = 3;   // 12+3+1 of 16
#endif
constexpr int kMaxPanel = kPanelVecs * kLanes;  // micro-kernel columns
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef float vfu __attribute__((vector_size(4 * kLanes), aligned(4),
                                 may_alias));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
template <size_t... I>
inline vf SplatLanes(float x, std::index_sequence<I...>) {
  return vf{(static_cast<void>(I), x)...};
}
// Written out lane by lane: `vf{} + x` costs an add per use.
inline vf splat(float x) {
  return SplatLanes(x, std::make_index_sequence<kLanes>{});
}

// tanh as an odd rational function of degree 13/6, clamped where float tanh
// is ±1; absolute error below 1e-6 (tests compare with jnp.tanh).
inline vf vtanh(vf x) {
  const vf limit = splat(7.90531110763549805f);
  x = x > limit ? limit : x;
  x = x < -limit ? -limit : x;
  const vf x2 = x * x;
  vf p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  vf q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return (x * p) / q;
}

// B of C = A @ B, cut into column panels of at most kMaxPanel columns, each
// stored k-major and contiguous, so the micro-kernel streams it linearly and
// a panel (K x 64 floats, 32 KB for K = 128) stays in L1 across row blocks.
class Packed {
 public:
  Packed(int k, int n) : k_(k), n_(n), data_(static_cast<size_t>(k) * n) {}
  // B = srcᵀ for src (N, K) row-major.
  static Packed Transposed(const float* src, int k, int n) {
    Packed b(k, n);
    b.Fill([=](size_t kk, size_t j) { return src[j * k + kk]; });
    return b;
  }
  // B = [top; bottom], top (k_top, N) and bottom (k - k_top, N) row-major.
  Packed(const float* top, int k_top, const float* bottom, int k, int n)
      : Packed(k, n) {
    Fill([=](size_t kk, size_t j) {
      return kk < static_cast<size_t>(k_top) ? top[kk * n + j]
                                              : bottom[(kk - k_top) * n + j];
    });
  }
  // B = src (K, N) with leading dimension ld, reusing this storage.
  void Pack(const float* src, size_t ld) {
    Fill([=](size_t kk, size_t j) { return src[kk * ld + j]; });
  }
  int k() const { return k_; }
  int n() const { return n_; }
  const float* panel(int n0) const {
    return data_.data() + static_cast<size_t>(n0) * k_;
  }

 private:
  // Lays out B(kk, j) = at(kk, j) panel by panel, each k-major.
  template <typename At>
  void Fill(At at) {
    float* out = data_.data();
    for (int n0 = 0; n0 < n_; n0 += kMaxPanel) {
      const int width = std::min(kMaxPanel, n_ - n0);
      for (int kk = 0; kk < k_; ++kk)
        for (int j = 0; j < width; ++j) *out++ = at(kk, n0 + j);
    }
  }

  int k_, n_;
  std::vector<float> data_;
};

// C[0:R, 0:V*kLanes] (+)= A[0:R, 0:K] @ panel, accumulators in registers.
template <int R, int V, bool kAdd>
inline void MicroKernel(const float* a, int lda, const float* panel, int k,
                        float* c, int ldc) {
  vf acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      acc[r][v] = kAdd ? load(c + r * ldc + v * kLanes) : vf{};
  for (int kk = 0; kk < k; ++kk) {
    vf b[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) b[v] = load(panel + (kk * V + v) * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r * lda + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += x * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) store(c + r * ldc + v * kLanes, acc[r][v]);
}

// The last rows % kMaxRows rows, with a block of exactly that many rows.
template <int R, int V, bool kAdd>
inline void TailRows(int rows, const float* a, int lda, const float* panel,
                     int k, float* c, int ldc) {
  if constexpr (R > 0) {
    if (rows == R) return MicroKernel<R, V, kAdd>(a, lda, panel, k, c, ldc);
    TailRows<R - 1, V, kAdd>(rows, a, lda, panel, k, c, ldc);
  }
}

template <int V, bool kAdd>
void PanelRows(const float* a, int lda, int rows, const float* panel, int k,
               float* c, int ldc) {
  int r = 0;
  for (; r + kMaxRows <= rows; r += kMaxRows)
    MicroKernel<kMaxRows, V, kAdd>(a + r * lda, lda, panel, k, c + r * ldc,
                                   ldc);
  TailRows<kMaxRows - 1, V, kAdd>(rows - r, a + r * lda, lda, panel, k,
                                  c + r * ldc, ldc);
}

// A panel of `vecs` vectors (the last panel may be narrower than kMaxPanel).
template <int V, bool kAdd>
inline void PanelOf(int vecs, const float* a, int lda, int rows,
                    const float* panel, int k, float* c, int ldc) {
  if (vecs == V || V == 1)
    return PanelRows<V, kAdd>(a, lda, rows, panel, k, c, ldc);
  if constexpr (V > 1)
    PanelOf<V - 1, kAdd>(vecs, a, lda, rows, panel, k, c, ldc);
}

// C (rows, N) = A (rows, K) @ B, or C += A @ B when kAdd; A and C row-major
// with leading dimensions K and N.
template <bool kAdd = false>
void Matmul(const float* a, int rows, const Packed& b, float* c) {
  const int k = b.k(), n = b.n();
  for (int n0 = 0; n0 < n; n0 += kMaxPanel)
    PanelOf<kPanelVecs, kAdd>(std::min(kMaxPanel, n - n0) / kLanes, a, k, rows,
                              b.panel(n0), k, c + n0, n);
}

// Time steps, batch, input features, hidden units.
struct Dims {
  int t, b, in, h;
  int k() const { return in + h; }  // rows of [w_x; w_h]
};

Dims DimsOf(const ffi::Buffer<ffi::F32>& x, const ffi::Buffer<ffi::F32>& w_h) {
  const auto xd = x.dimensions();
  return {static_cast<int>(xd[0]), static_cast<int>(xd[1]),
          static_cast<int>(xd[2]), static_cast<int>(w_h.dimensions()[0])};
}

ffi::Error CheckDims(const Dims& d, const ffi::Buffer<ffi::F32>& w_x,
                     const ffi::Buffer<ffi::F32>& w_h) {
  if (d.h % 16 != 0)  // a whole number of vectors on every ISA above
    return ffi::Error::InvalidArgument(
        "seqclf lstm_kernel: hidden size must be a multiple of 16");
  const auto wx = w_x.dimensions(), wh = w_h.dimensions();
  if (wh[1] != 4 * wh[0] || wx[0] != d.in || wx[1] != wh[1])
    return ffi::Error::InvalidArgument(
        "seqclf lstm_kernel: expected x (T, B, I), w_x (I, 4H), w_h (H, 4H)");
  return ffi::Error::Success();
}

// Rows [r0, r1) of every time step. Batch rows never interact in an LSTM,
// so each slice of the batch runs its whole recurrence independently.
struct Rows {
  int r0, r1;
  int n() const { return r1 - r0; }
};

// A slice needs this many register blocks to pay for running it on another
// thread: with the CPU split into one device per core, each device's 50 rows
// of a batch of 100 ran faster unsplit, while 128 or 512 rows per device gain
// from a split (measured: docs/cpu_kernel.md).
constexpr int kMinSliceBlocks = 8;
// And at most this many: a step's gates and residuals then stay in L2 (512
// rows ran slower as one slice than as slices of 96-128 one after another on
// the same core, float32 and AMX alike: docs/cpu_kernel.md).
constexpr int kMaxSliceBlocks = 24;

// The batch cut into slices of whole register blocks, between
// kMinSliceBlocks (one slice when the batch is small) and kMaxSliceBlocks
// each, run by at most one worker per pool thread.
struct Slicing {
  int batch, blocks, workers, slices;
  Slicing(ffi::ThreadPool& pool, int batch)
      : batch(batch), blocks((batch + kMaxRows - 1) / kMaxRows) {
    workers = static_cast<int>(
        std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1),
                          std::max(blocks / kMinSliceBlocks, 1)));
    slices = std::max(workers,
                      (blocks + kMaxSliceBlocks - 1) / kMaxSliceBlocks);
  }
  Rows rows(int i) const {
    return Rows{std::min(batch, i * blocks / slices * kMaxRows),
                std::min(batch, (i + 1) * blocks / slices * kMaxRows)};
  }
};

// Runs fn(i) for i in [0, n) on `workers` threads of the intra-op pool, the
// caller being one of them. A pool task that starts after every index is
// taken returns without touching fn, so the caller waits only for work
// already running: no deadlock when other calls occupy the pool.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int workers, int n, const Fn& fn) {
  if (workers <= 1 || n <= 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  struct Progress {
    std::atomic<int> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  auto work = [progress, n, &fn] {
    for (int i; (i = progress->next.fetch_add(1)) < n;) {
      fn(i);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int i = 1; i < std::min(workers, n); ++i)
    pool.Schedule(decltype(work)(work));
  work();
  while (progress->done.load(std::memory_order_acquire) < n)
    std::this_thread::yield();
}

// One time step's gates, [x_t, h] @ [w_x; w_h], in float32 with the
// register-blocked micro-kernel.
class Fp32Gates {
 public:
  Fp32Gates(const Dims& d, int rows, const Packed& w)
      : d_(d), rows_(rows), w_(w), xh_(static_cast<size_t>(rows) * d.k()),
        gates_(static_cast<size_t>(rows) * 4 * d.h) {}
  void SetX(int b, const float* x) {
    std::memcpy(&xh_[static_cast<size_t>(b) * d_.k()], x, d_.in * sizeof(float));
  }
  void SetH(int b, const float* h) {
    std::memcpy(&xh_[static_cast<size_t>(b) * d_.k() + d_.in], h,
                d_.h * sizeof(float));
  }
  const float* Multiply() {
    Matmul(xh_.data(), rows_, w_, gates_.data());
    return gates_.data();
  }

 private:
  const Dims& d_;
  int rows_;
  const Packed& w_;
  std::vector<float> xh_, gates_;
};

// Forward recurrence of rows `r`: per step gates = [x_t, h] @ [w_x; w_h] + b
// as one matmul (`Gates`: Fp32Gates or Bf16Gates). Residuals (tanh of the
// scaled gates, the cell state before each step, tanh of the cell state
// after it) are written only when `ts` is non-null, i.e. when a backward
// pass will need them.
template <typename Gates>
void Forward(const Dims& d, Rows r, Gates& step_gates, const float* x,
             const float* bias, const float* c0, const float* h0,
             const int32_t* lengths, float forget_bias, float* hs,
             float* c_last, float* ts, float* c_prev, float* tanh_cs) {
  const int h = d.h, g = 4 * d.h;
  const size_t first = static_cast<size_t>(r.r0) * h;
  const size_t state = static_cast<size_t>(r.n()) * h;
  std::vector<float> c(c0 + first, c0 + first + state);
  for (int b = 0; b < r.n(); ++b) step_gates.SetH(b, h0 + first + b * h);
  const vf half = splat(0.5f), f_shift = splat(0.5f * forget_bias);
  for (int t = 0; t < d.t; ++t) {
    const size_t step = static_cast<size_t>(t) * d.b + r.r0;
    for (int b = 0; b < r.n(); ++b)
      step_gates.SetX(b, x + (step + b) * d.in);
    const float* gates = step_gates.Multiply();
    for (int b = 0; b < r.n(); ++b) {
      const size_t row = step + b;
      if (t >= lengths[r.r0 + b]) {  // Padding: state kept, output zero.
        std::memset(hs + row * h, 0, h * sizeof(float));
        continue;
      }
      const float* z = gates + static_cast<size_t>(b) * g;
      for (int j = 0; j < h; j += kLanes) {
        const vf ti = vtanh(half * (load(z + j) + load(bias + j)));
        const vf tj = vtanh(load(z + h + j) + load(bias + h + j));
        const vf tf = vtanh(
            half * (load(z + 2 * h + j) + load(bias + 2 * h + j)) + f_shift);
        const vf to =
            vtanh(half * (load(z + 3 * h + j) + load(bias + 3 * h + j)));
        const size_t at = static_cast<size_t>(b) * h + j;
        const vf c_old = load(c.data() + at);
        const vf c_new = (half * tf + half) * c_old + (half * ti + half) * tj;
        const vf tanh_c = vtanh(c_new);
        store(c.data() + at, c_new);
        store(hs + row * h + j, (half * to + half) * tanh_c);
        if (ts != nullptr) {
          float* out = ts + row * g;
          store(out + j, ti);
          store(out + h + j, tj);
          store(out + 2 * h + j, tf);
          store(out + 3 * h + j, to);
          store(c_prev + row * h + j, c_old);
          store(tanh_cs + row * h + j, tanh_c);
        }
      }
      step_gates.SetH(b, hs + row * h);
    }
  }
  std::memcpy(c_last + first, c.data(), state * sizeof(float));
}

// A slice's share of the weight gradients, added step by step while each
// step's [x_t, h_{t-1}] and gate gradient are in cache (Σ_t [x_t,
// h_{t-1}]ᵀ dgates_t into dw ((I + H), 4H)), and the state gradient
// dh_{t-1} = dgates_t @ w_hᵀ, in float32 with the micro-kernel.
class Fp32Grads {
 public:
  Fp32Grads(const Dims& d, int rows, const Packed& w_t, float* dw)
      : d_(d), rows_(rows), w_t_(w_t), dw_(dw),
        xh_t_(static_cast<size_t>(d.k()) * rows), dgates_t_(rows, 4 * d.h) {}
  void Step(int /*t*/, const float* dgates, const float* x_t,
            const float* h_prev, float* dh) {
    const int n = rows_;
    for (int b = 0; b < n; ++b) {  // [x, h]ᵀ (I + H, n)
      for (int i = 0; i < d_.in; ++i)
        xh_t_[static_cast<size_t>(i) * n + b] = x_t[b * d_.in + i];
      for (int i = 0; i < d_.h; ++i)
        xh_t_[static_cast<size_t>(d_.in + i) * n + b] = h_prev[b * d_.h + i];
    }
    dgates_t_.Pack(dgates, 4 * d_.h);
    Matmul</*kAdd=*/true>(xh_t_.data(), d_.k(), dgates_t_, dw_);
    Matmul(dgates, n, w_t_, dh);
  }
  void Finish() {}

 private:
  const Dims& d_;
  int rows_;
  const Packed& w_t_;
  float* dw_;
  std::vector<float> xh_t_;
  Packed dgates_t_;
};

// Reverse recurrence of rows `r`: carries only (dc, dh) and writes every
// step's gate gradient; `grads` (Fp32Grads or Bf16Grads) forms dh_{t-1} and
// the weight gradient dw ((I + H), 4H); the bias gradient db (4H) is summed
// here.
template <typename Grads>
void Backward(const Dims& d, Rows r, Grads& grads, const float* dhs,
              const float* dc_last, const float* dh_last, const float* ts,
              const float* c_prev, const float* tanh_cs, const float* x,
              const float* hs, const float* h0, const int32_t* lengths,
              float* dgates, float* dc0, float* dh0, float* db) {
  const int h = d.h, g = 4 * d.h, n = r.n();
  const size_t first = static_cast<size_t>(r.r0) * h;
  const size_t state = static_cast<size_t>(n) * h;
  std::vector<float> dc(dc_last + first, dc_last + first + state);
  std::vector<float> dh(dh_last + first, dh_last + first + state);
  const vf half = splat(0.5f), quarter = splat(0.25f), one = splat(1.0f);
  for (int t = d.t - 1; t >= 0; --t) {
    const size_t step = static_cast<size_t>(t) * d.b + r.r0;
    for (int b = 0; b < n; ++b) {
      const float* gate_t = ts + (step + b) * g;
      float* out = dgates + (step + b) * g;
      if (t >= lengths[r.r0 + b]) {  // Padding: no gate gradient, dc kept.
        std::memset(out, 0, g * sizeof(float));
        continue;
      }
      for (int j = 0; j < h; j += kLanes) {
        const size_t at = static_cast<size_t>(b) * h + j;
        const size_t at_t = (step + b) * h + j;
        const vf ti = load(gate_t + j), tj = load(gate_t + h + j);
        const vf tf = load(gate_t + 2 * h + j), to = load(gate_t + 3 * h + j);
        const vf tanh_c = load(tanh_cs + at_t);
        const vf dh_t = load(dh.data() + at) + load(dhs + at_t);
        const vf dc_t = load(dc.data() + at) +
                        dh_t * (half * to + half) * (one - tanh_c * tanh_c);
        store(out + j, dc_t * tj * (quarter * (one - ti * ti)));
        store(out + h + j, dc_t * (half * ti + half) * (one - tj * tj));
        store(out + 2 * h + j,
              dc_t * load(c_prev + at_t) * (quarter * (one - tf * tf)));
        store(out + 3 * h + j, dh_t * tanh_c * (quarter * (one - to * to)));
        store(dc.data() + at, dc_t * (half * tf + half));
      }
      for (int j = 0; j < g; j += kLanes)
        store(db + j, load(db + j) + load(out + j));
    }
    grads.Step(t, dgates + step * g, x + step * d.in,
               t ? hs + (step - d.b) * h : h0 + first, dh.data());
    // Step formed dh_{t-1} from zero gate gradients for padded rows: their
    // dh passes through padding unchanged, so it is still dh_T's.
    for (int b = 0; b < n; ++b)
      if (t >= lengths[r.r0 + b])
        std::memcpy(dh.data() + static_cast<size_t>(b) * h,
                    dh_last + first + static_cast<size_t>(b) * h,
                    h * sizeof(float));
  }
  grads.Finish();
  std::memcpy(dc0 + first, dc.data(), state * sizeof(float));
  std::memcpy(dh0 + first, dh.data(), state * sizeof(float));
}

#ifdef SEQCLF_BF16
// ----------------------------------------------------------- bfloat16
// matmul_precision='bfloat16': the matmuls' operands rounded to bfloat16
// (8 mantissa bits), pairs of products summed in float32 by a bfloat16 dot
// product instruction; gates, state and the elementwise arithmetic stay
// float32. Two engines share the operands' layout and the steps around the
// matmuls (Bf16Gates, Bf16Grads): AVX512_BF16's vdpbf16ps in the float32
// path's register blocks (Dp), and Intel AMX tiles, a 16x32 by 32x16 block
// per instruction (Amx). Three-pass bfloat16 ('bfloat16_3x', near float32)
// was tried on AMX and dropped: tile loads, not the multiplier, bound these
// small matmuls, so three passes were no faster than the float32
// micro-kernel (docs/cpu_kernel.md).

using bf16 = uint16_t;
constexpr int kTile = 16;   // float32 columns of C per vector, rows of a tile
constexpr int kTileK = 32;  // rows of B per block of the layout below
inline int RoundUp(int x, int m) { return (x + m - 1) / m * m; }

// bfloat16 of 16 floats (round to nearest even).
inline __m256i ToBf16(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

// Writes bfloat16 of x[0:n] to row[0:RoundUp(n, 16)], zeros past n.
inline void PutBf16(const float* x, int n, bf16* row) {
  for (int j = 0; j < n; j += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(
        n - j >= 16 ? 0xffff : (1u << (n - j)) - 1, x + j);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + j), ToBf16(v));
  }
}

// B (K x N) as both engines read it: pairs of rows interleaved, row k/2 of
// a strip of 16 columns holding rows k and k + 1 side by side per column
// (one 64-byte vector, what vdpbf16ps multiplies, a row of an AMX tile);
// strip nt (columns 16nt..16nt+15) is contiguous, cut into AMX tiles of 32
// rows of B, 1 KB each. K a multiple of 32, N of 16.
class Bf16B {
 public:
  Bf16B(int k, int n)
      : kt_(k / kTileK), nt_(n / kTile),
        data_(new uint32_t[static_cast<size_t>(k) / 2 * n]) {}
  // B from float rows, row(k) (N floats, or nullptr for zeros), k < K.
  template <typename Row>
  Bf16B(int k, int n, const Row& row) : Bf16B(k, n) {
    for (int k0 = 0; k0 < k; k0 += 2) SetPair(k0, row(k0), row(k0 + 1));
  }
  int k() const { return kt_ * kTileK; }
  int n() const { return nt_ * kTile; }
  const uint32_t* strip(int nt) const {
    return data_.get() + static_cast<size_t>(nt) * kt_ * 256;
  }
  const uint32_t* tile(int nt, int kt) const { return strip(nt) + kt * 256; }
  // Rows k0 and k0 + 1 (k0 even) from float rows r0, r1 (nullptr: zeros).
  void SetPair(int k0, const float* r0, const float* r1) {
    for (int nt = 0; nt < nt_; ++nt) {
      const __m512i pair = _mm512_or_si512(
          _mm512_cvtepu16_epi32(Part(r0, nt)),
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(Part(r1, nt)), 16));
      _mm512_storeu_si512(data_.get() + static_cast<size_t>(nt) * kt_ * 256 +
                              k0 / 2 * 16,
                          pair);
    }
  }

 private:
  static __m256i Part(const float* r, int nt) {
    return r ? ToBf16(_mm512_loadu_ps(r + nt * kTile)) : _mm256_setzero_si256();
  }
  int kt_, nt_;
  std::unique_ptr<uint32_t[]> data_;
};

// ------------------------------------------------ AVX512_BF16 (vdpbf16ps)
// C[0:R, 0:16V] = A[0:R, 0:2 pairs] @ B's strips from `b` on (`stride`
// apart): per pair of B's rows V vectors of B, and per row of A its pair
// of bfloat16 broadcast to every lane; each vdpbf16ps adds two products to
// each of its 16 float32 accumulators. The float32 block's registers: 24
// accumulators + 4 of B + 1 broadcast of 32 zmm.
template <int R, int V>
inline void DpKernel(const bf16* a, int lda, const uint32_t* b, size_t stride,
                     int pairs, float* c, int ldc) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    __m512bh bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      bv[v] = (__m512bh)_mm512_loadu_si512(b + v * stride + p * 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      std::memcpy(&pair, a + static_cast<size_t>(r) * lda + 2 * p, 4);
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, bv[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      _mm512_storeu_ps(c + static_cast<size_t>(r) * ldc + v * kTile, acc[r][v]);
}

constexpr int kDpRows = 6, kDpVecs = 4;  // AVX-512's float32 block

// The last rows % kDpRows rows, with a block of exactly that many rows.
template <int R, int V>
inline void DpTailRows(int rows, const bf16* a, int lda, const uint32_t* b,
                       size_t stride, int pairs, float* c, int ldc) {
  if constexpr (R > 0) {
    if (rows == R) return DpKernel<R, V>(a, lda, b, stride, pairs, c, ldc);
    DpTailRows<R - 1, V>(rows, a, lda, b, stride, pairs, c, ldc);
  }
}

template <int V>
void DpPanel(const bf16* a, int lda, int m, const uint32_t* b, size_t stride,
             int pairs, float* c, int ldc) {
  int r = 0;
  for (; r + kDpRows <= m; r += kDpRows)
    DpKernel<kDpRows, V>(a + static_cast<size_t>(r) * lda, lda, b, stride,
                         pairs, c + static_cast<size_t>(r) * ldc, ldc);
  DpTailRows<kDpRows - 1, V>(m - r, a + static_cast<size_t>(r) * lda, lda, b,
                             stride, pairs, c + static_cast<size_t>(r) * ldc,
                             ldc);
}

// C (m x N, float32, leading dimension ldc) = A (m x K, bfloat16 row-major,
// leading dimension lda, even) @ B, panel of kDpVecs strips by panel.
struct Dp {
  static constexpr int kRowAlign = 1;  // any number of rows
  struct Session {};                   // nothing to set up per thread
  static void Matmul(const bf16* a, int lda, int m, const Bf16B& b, float* c,
                     int ldc) {
    const int nts = b.n() / kTile, pairs = b.k() / 2;
    const size_t stride = static_cast<size_t>(b.k()) / 2 * kTile;
    for (int nt = 0; nt < nts; nt += kDpVecs) {
      const uint32_t* strip = b.strip(nt);
      float* cn = c + nt * kTile;
      switch (std::min(kDpVecs, nts - nt)) {
        case 4: DpPanel<4>(a, lda, m, strip, stride, pairs, cn, ldc); break;
        case 3: DpPanel<3>(a, lda, m, strip, stride, pairs, cn, ldc); break;
        case 2: DpPanel<2>(a, lda, m, strip, stride, pairs, cn, ldc); break;
        default: DpPanel<1>(a, lda, m, strip, stride, pairs, cn, ldc);
      }
    }
  }
};

#ifdef SEQCLF_AMX
// ------------------------------------------------------------------ AMX
// Tile registers 0-3 hold a 2x2 block of C, 4-5 two row tiles of A, 6-7
// two column tiles of B; configured per thread for the span of one call.
// The configuration is a constant: built on the stack, GCC 12 let
// ldtilecfg read it before all its stores had landed.
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
constexpr TileConfig kTileConfig = {
    1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64},
    {kTile, kTile, kTile, kTile, kTile, kTile, kTile, kTile}};

// Loads kTileConfig for its lifetime and then puts back the thread's own
// (other AMX code on XLA's threads, e.g. oneDNN, may cache that it loaded
// one), or releases the tiles if there was none.
class AmxTiles {
 public:
  AmxTiles() {
    _tile_storeconfig(&saved_);
    asm volatile("" : : "r"(&saved_) : "memory");  // Read only after sttilecfg.
    _tile_loadconfig(&kTileConfig);
  }
  ~AmxTiles() {
    if (saved_.palette) {
      _tile_loadconfig(&saved_);
    } else {
      _tile_release();
    }
  }

 private:
  TileConfig saved_;
};

// C block (MT x NT tiles, each 1 or 2) at tile (mt, nt) = A @ B.
template <int MT, int NT>
void AmxBlock(const bf16* a, int lda, const Bf16B& b, int mt, int nt, float* c,
              int ldc) {
  const bf16* a0 = a + static_cast<size_t>(mt) * kTile * lda;
  const bf16* a1 = a0 + static_cast<size_t>(kTile) * lda;
  float* c0 = c + static_cast<size_t>(mt) * kTile * ldc + nt * kTile;
  float* c1 = c0 + static_cast<size_t>(kTile) * ldc;
  const int stride_a = lda * 2, stride_c = ldc * 4;
  _tile_zero(0);
  if constexpr (NT == 2) _tile_zero(1);
  if constexpr (MT == 2) _tile_zero(2);
  if constexpr (MT == 2 && NT == 2) _tile_zero(3);
  for (int kt = 0; kt < b.k() / kTileK; ++kt) {
    _tile_loadd(4, a0 + kt * kTileK, stride_a);
    _tile_loadd(6, b.tile(nt, kt), 64);
    if constexpr (MT == 2) _tile_loadd(5, a1 + kt * kTileK, stride_a);
    if constexpr (NT == 2) _tile_loadd(7, b.tile(nt + 1, kt), 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (MT == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c0, stride_c);
  if constexpr (NT == 2) _tile_stored(1, c0 + kTile, stride_c);
  if constexpr (MT == 2) _tile_stored(2, c1, stride_c);
  if constexpr (MT == 2 && NT == 2) _tile_stored(3, c1 + kTile, stride_c);
}

// Dp's interface on AMX tiles; rows of A and C padded to 16.
struct Amx {
  static constexpr int kRowAlign = kTile;
  using Session = AmxTiles;
  static void Matmul(const bf16* a, int lda, int m, const Bf16B& b, float* c,
                     int ldc) {
    const int mts = m / kTile, nts = b.n() / kTile;
    for (int mt = 0; mt < mts; mt += 2)
      for (int nt = 0; nt < nts; nt += 2) {
        const bool m2 = mt + 1 < mts, n2 = nt + 1 < nts;
        if (m2 && n2) AmxBlock<2, 2>(a, lda, b, mt, nt, c, ldc);
        else if (m2) AmxBlock<2, 1>(a, lda, b, mt, nt, c, ldc);
        else if (n2) AmxBlock<1, 2>(a, lda, b, mt, nt, c, ldc);
        else AmxBlock<1, 1>(a, lda, b, mt, nt, c, ldc);
      }
  }
};

// Whether this process may use AMX tiles (Linux asks each process to
// request them once).
bool AmxUsable() {
  static const bool usable = [] {
    constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}
#else
bool AmxUsable() { return false; }
#endif  // SEQCLF_AMX

// The rows of [x; h] in bfloat16: x padded to 16, the whole to 32.
struct Bf16Layout {
  int kx, k;
  explicit Bf16Layout(const Dims& d)
      : kx(RoundUp(d.in, 16)), k(RoundUp(RoundUp(d.in, 16) + d.h, kTileK)) {}
};

// [w_x; w_h] in Bf16Layout's rows (forward).
Bf16B Bf16Weights(const Dims& d, const float* w_x, const float* w_h) {
  const Bf16Layout l(d);
  const size_t g = 4 * d.h;
  return Bf16B(l.k, g, [&](int k) -> const float* {
    if (k < d.in) return w_x + k * g;
    if (k >= l.kx && k < l.kx + d.h) return w_h + (k - l.kx) * g;
    return nullptr;
  });
}

// w_hᵀ (4H x H) (backward: dh = dgates @ w_hᵀ).
Bf16B Bf16WeightsT(const Dims& d, const float* w_h) {
  const size_t h = d.h, g = 4 * d.h;
  std::vector<float> t(g * h);
  for (size_t i = 0; i < h; ++i)
    for (size_t j = 0; j < g; ++j) t[j * h + i] = w_h[i * g + j];
  return Bf16B(g, h, [&](int k) { return &t[k * h]; });
}

// Fp32Gates' interface in bfloat16: [x_t, h] rounded as it is set, rows
// padded to the engine's multiple.
template <typename Engine>
class Bf16Gates {
 public:
  Bf16Gates(const Dims& d, int rows, const Bf16B& w)
      : d_(d), l_(d), rows_(RoundUp(rows, Engine::kRowAlign)), w_(w),
        xh_(static_cast<size_t>(rows_) * l_.k, 0),
        gates_(static_cast<size_t>(rows_) * 4 * d.h) {}
  void SetX(int b, const float* x) {
    PutBf16(x, d_.in, &xh_[static_cast<size_t>(b) * l_.k]);
  }
  void SetH(int b, const float* h) {
    PutBf16(h, d_.h, &xh_[static_cast<size_t>(b) * l_.k + l_.kx]);
  }
  const float* Multiply() {
    Engine::Matmul(xh_.data(), l_.k, rows_, w_, gates_.data(), 4 * d_.h);
    return gates_.data();
  }

 private:
  const Dims& d_;
  Bf16Layout l_;
  int rows_;
  const Bf16B& w_;
  std::vector<bf16> xh_;
  std::vector<float> gates_;
};

// Fp32Grads' interface in bfloat16. dh_{t-1} per step; the weight gradient
// as one matmul after the last step, [x, h]ᵀ (features x steps*rows) @
// dgates (steps*rows x 4H): a long contraction that keeps C in registers
// (or tiles).
template <typename Engine>
class Bf16Grads {
 public:
  Bf16Grads(const Dims& d, int rows, const Bf16B& w_t, float* dw)
      : d_(d), l_(d), rows_(rows), rows_pad_(RoundUp(rows, Engine::kRowAlign)),
        cols_(RoundUp(rows, 2)), inner_(RoundUp(d.t * cols_, kTileK)),
        w_t_(w_t), dw_(dw),
        dgates_bf16_(static_cast<size_t>(rows_pad_) * 4 * d.h, 0),
        dh_(static_cast<size_t>(rows_pad_) * d.h),
        xh_t_(static_cast<size_t>(l_.k) * inner_, 0),
        xh_rows_(static_cast<size_t>(kTile) * l_.k, 0),
        dgates_t_(inner_, 4 * d.h) {
    for (int i = d.t * cols_; i < inner_; i += 2)  // padding: zeros
      dgates_t_.SetPair(i, nullptr, nullptr);
  }
  void Step(int t, const float* dgates, const float* x_t, const float* h_prev,
            float* dh) {
    const size_t g = 4 * d_.h;
    for (int b = 0; b < rows_; ++b)
      PutBf16(dgates + b * g, g, &dgates_bf16_[b * g]);
    Engine::Matmul(dgates_bf16_.data(), g, rows_pad_, w_t_, dh_.data(), d_.h);
    std::memcpy(dh, dh_.data(), static_cast<size_t>(rows_) * d_.h * sizeof(float));
    // This step's rows of dgates and columns of [x, h]ᵀ.
    const int col0 = t * cols_;
    for (int b = 0; b < rows_; b += 2)
      dgates_t_.SetPair(col0 + b, dgates + b * g,
                        b + 1 < rows_ ? dgates + (b + 1) * g : nullptr);
    // Transposed 16 rows at a time, so each store fills part of one line.
    for (int b0 = 0; b0 < rows_; b0 += kTile) {
      const int nb = std::min(kTile, rows_ - b0);
      for (int i = 0; i < nb; ++i) {
        bf16* row = &xh_rows_[static_cast<size_t>(i) * l_.k];
        PutBf16(x_t + static_cast<size_t>(b0 + i) * d_.in, d_.in, row);
        PutBf16(h_prev + static_cast<size_t>(b0 + i) * d_.h, d_.h,
                row + l_.kx);
      }
      for (int k = 0; k < l_.k; ++k) {
        bf16* to = xh_t_.data() + static_cast<size_t>(k) * inner_ + col0 + b0;
        for (int i = 0; i < nb; ++i) to[i] = xh_rows_[i * l_.k + k];
      }
    }
  }
  void Finish() {
    const int g = 4 * d_.h;
    std::vector<float> dw(static_cast<size_t>(l_.k) * g);
    Engine::Matmul(xh_t_.data(), inner_, l_.k, dgates_t_, dw.data(), g);
    for (int k = 0; k < d_.k(); ++k) {
      const float* from = &dw[static_cast<size_t>(k < d_.in ? k : l_.kx + k - d_.in) * g];
      float* to = dw_ + static_cast<size_t>(k) * g;
      for (int j = 0; j < g; ++j) to[j] += from[j];
    }
  }

 private:
  const Dims& d_;
  Bf16Layout l_;
  int rows_, rows_pad_, cols_, inner_;
  const Bf16B& w_t_;
  float* dw_;
  std::vector<bf16> dgates_bf16_;
  std::vector<float> dh_;
  std::vector<bf16> xh_t_, xh_rows_;
  Bf16B dgates_t_;
};

// Runs fn(Engine()) with the engine this build and process have: AMX
// where it was built and Linux grants it, else AVX512_BF16.
template <typename Fn>
void WithBf16Engine(const Fn& fn) {
#ifdef SEQCLF_AMX
  if (AmxUsable()) return fn(Amx());
#endif
  fn(Dp());
}

// 2: bfloat16 matmuls on AMX, 1: on AVX512_BF16.
int Bf16Engine() { return AmxUsable() ? 2 : 1; }
#else
int Bf16Engine() { return 0; }  // no bfloat16 matmuls in this build
#endif  // SEQCLF_BF16

using Arg = ffi::Buffer<ffi::F32>;
using Ret = ffi::ResultBuffer<ffi::F32>;
using Lengths = ffi::Buffer<ffi::S32>;

ffi::Error CheckLengths(const Dims& d, const Lengths& lengths) {
  const auto ld = lengths.dimensions();
  if (ld.size() != 1 || ld[0] != d.b)
    return ffi::Error::InvalidArgument(
        "seqclf lstm_kernel: expected lengths of shape (B,)");
  return ffi::Error::Success();
}

ffi::Error CheckBf16(int bf16) {
  if (bf16 && !Bf16Engine())
    return ffi::Error::InvalidArgument(
        "seqclf lstm_kernel: bfloat16 matmuls need AVX512_BF16 or AMX, which "
        "this CPU or build lacks; use matmul_precision='float32'");
  return ffi::Error::Success();
}

// Inputs: x (T, B, I), w_x (I, 4H), b (4H), w_h (H, 4H), c0, h0 (B, H),
// lengths (B) int32 (T for rows without padding).
// Attributes: forget_bias; bf16 (1: bfloat16 matmuls on AMX or AVX512_BF16,
// 0: float32).
// Results: hs (T, B, H), c_T (B, H) [, ts (T, B, 4H), c_prev, tanh_cs
// (T, B, H) when training].
ffi::Error ForwardAny(ffi::ThreadPool& pool, const Arg& x, const Arg& w_x,
                      const Arg& bias, const Arg& w_h, const Arg& c0,
                      const Arg& h0, const Lengths& lengths,
                      float forget_bias, int bf16, Ret& hs, Ret& c_last,
                      float* ts, float* c_prev, float* tanh_cs) {
  const Dims d = DimsOf(x, w_h);
  if (ffi::Error e = CheckDims(d, w_x, w_h); e.failure()) return e;
  if (ffi::Error e = CheckLengths(d, lengths); e.failure()) return e;
  if (ffi::Error e = CheckBf16(bf16); e.failure()) return e;
  const Slicing slicing(pool, d.b);
  auto run = [&](int i, auto& gates) {
    Forward(d, slicing.rows(i), gates, x.typed_data(), bias.typed_data(),
            c0.typed_data(), h0.typed_data(), lengths.typed_data(),
            forget_bias, hs->typed_data(), c_last->typed_data(), ts, c_prev,
            tanh_cs);
  };
#ifdef SEQCLF_BF16
  if (bf16) {
    const Bf16B w = Bf16Weights(d, w_x.typed_data(), w_h.typed_data());
    WithBf16Engine([&](auto engine) {
      using Engine = decltype(engine);
      ParallelFor(pool, slicing.workers, slicing.slices, [&](int i) {
        [[maybe_unused]] typename Engine::Session session;
        Bf16Gates<Engine> gates(d, slicing.rows(i).n(), w);
        run(i, gates);
      });
    });
  }
#endif
  if (!bf16) {
    const Packed w(w_x.typed_data(), d.in, w_h.typed_data(), d.k(), 4 * d.h);
    ParallelFor(pool, slicing.workers, slicing.slices, [&](int i) {
      Fp32Gates gates(d, slicing.rows(i).n(), w);
      run(i, gates);
    });
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, Arg x, Arg w_x, Arg bias,
                       Arg w_h, Arg c0, Arg h0, Lengths lengths,
                       float forget_bias, int32_t bf16, Ret hs, Ret c_last) {
  return ForwardAny(pool, x, w_x, bias, w_h, c0, h0, lengths, forget_bias,
                    bf16, hs, c_last, nullptr, nullptr, nullptr);
}

ffi::Error ForwardTrainImpl(ffi::ThreadPool pool, Arg x, Arg w_x, Arg bias,
                            Arg w_h, Arg c0, Arg h0, Lengths lengths,
                            float forget_bias, int32_t bf16, Ret hs,
                            Ret c_last, Ret ts, Ret c_prev, Ret tanh_cs) {
  return ForwardAny(pool, x, w_x, bias, w_h, c0, h0, lengths, forget_bias,
                    bf16, hs, c_last, ts->typed_data(), c_prev->typed_data(),
                    tanh_cs->typed_data());
}

// Inputs: the forward's cotangents dhs, dc_T, dh_T; its residuals ts,
// c_prev, tanh_cs; x, hs, h0, w_x, w_h, lengths. Attribute: bf16, as above.
// Results: dgates (T, B, 4H) (for the input gradient, formed in XLA only
// where something needs it), dw_x, db, dw_h, dc0, dh0.
ffi::Error BackwardImpl(ffi::ThreadPool pool, Arg dhs, Arg dc_last,
                        Arg dh_last, Arg ts, Arg c_prev, Arg tanh_cs, Arg x,
                        Arg hs, Arg h0, Arg w_x, Arg w_h, Lengths lengths,
                        int32_t bf16, Ret dgates, Ret dw_x, Ret db, Ret dw_h,
                        Ret dc0, Ret dh0) {
  const Dims d = DimsOf(x, w_h);
  if (ffi::Error e = CheckDims(d, w_x, w_h); e.failure()) return e;
  if (ffi::Error e = CheckLengths(d, lengths); e.failure()) return e;
  if (ffi::Error e = CheckBf16(bf16); e.failure()) return e;
  const Slicing slicing(pool, d.b);
  // One gradient per slice, summed in slice order: deterministic for a
  // given thread count. Each holds [dw_x; dw_h] then db.
  const int g = 4 * d.h;
  const size_t size = static_cast<size_t>(d.k() + 1) * g;
  std::vector<std::vector<float>> sums(slicing.slices,
                                       std::vector<float>(size, 0.0f));
  auto run = [&](int i, auto& grads) {
    Backward(d, slicing.rows(i), grads, dhs.typed_data(),
             dc_last.typed_data(), dh_last.typed_data(), ts.typed_data(),
             c_prev.typed_data(), tanh_cs.typed_data(), x.typed_data(),
             hs.typed_data(), h0.typed_data(), lengths.typed_data(),
             dgates->typed_data(), dc0->typed_data(), dh0->typed_data(),
             sums[i].data() + static_cast<size_t>(d.k()) * g);
  };
#ifdef SEQCLF_BF16
  if (bf16) {
    const Bf16B w_t = Bf16WeightsT(d, w_h.typed_data());
    WithBf16Engine([&](auto engine) {
      using Engine = decltype(engine);
      ParallelFor(pool, slicing.workers, slicing.slices, [&](int i) {
        [[maybe_unused]] typename Engine::Session session;
        Bf16Grads<Engine> grads(d, slicing.rows(i).n(), w_t, sums[i].data());
        run(i, grads);
      });
    });
  }
#endif
  if (!bf16) {
    const Packed w_t = Packed::Transposed(w_h.typed_data(), 4 * d.h, d.h);
    ParallelFor(pool, slicing.workers, slicing.slices, [&](int i) {
      Fp32Grads grads(d, slicing.rows(i).n(), w_t, sums[i].data());
      run(i, grads);
    });
  }
  for (int i = 1; i < slicing.slices; ++i)
    for (size_t j = 0; j < size; ++j) sums[0][j] += sums[i][j];
  const float* sum = sums[0].data();
  const size_t x_part = static_cast<size_t>(d.in) * g;
  const size_t h_part = static_cast<size_t>(d.h) * g;
  std::memcpy(dw_x->typed_data(), sum, x_part * sizeof(float));
  std::memcpy(dw_h->typed_data(), sum + x_part, h_part * sizeof(float));
  std::memcpy(db->typed_data(), sum + x_part + h_part, g * sizeof(float));
  return ffi::Error::Success();
}

}  // namespace

// Bindings: float32 buffers in the order of the *Impl functions' parameters;
// every call gets XLA:CPU's intra-op thread pool.
namespace {
auto ForwardArgs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<Arg>()  // x
      .Arg<Arg>()  // w_x
      .Arg<Arg>()  // b
      .Arg<Arg>()  // w_h
      .Arg<Arg>()  // c0
      .Arg<Arg>()  // h0
      .Arg<Lengths>()  // lengths
      .Attr<float>("forget_bias")
      .Attr<int32_t>("bf16")
      .Ret<Arg>()   // hs
      .Ret<Arg>();  // c_T
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmForward, ForwardImpl, ForwardArgs());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmForwardTrain, ForwardTrainImpl,
                              ForwardArgs()
                                  .Ret<Arg>()    // ts
                                  .Ret<Arg>()    // c_prev
                                  .Ret<Arg>());  // tanh_cs

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqclfLstmBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Arg>()  // dhs
                                  .Arg<Arg>()  // dc_T
                                  .Arg<Arg>()  // dh_T
                                  .Arg<Arg>()  // ts
                                  .Arg<Arg>()  // c_prev
                                  .Arg<Arg>()  // tanh_cs
                                  .Arg<Arg>()  // x
                                  .Arg<Arg>()  // hs
                                  .Arg<Arg>()  // h0
                                  .Arg<Arg>()  // w_x
                                  .Arg<Arg>()  // w_h
                                  .Arg<Lengths>()  // lengths
                                  .Attr<int32_t>("bf16")
                                  .Ret<Arg>()   // dgates
                                  .Ret<Arg>()   // dw_x
                                  .Ret<Arg>()   // db
                                  .Ret<Arg>()   // dw_h
                                  .Ret<Arg>()   // dc0
                                  .Ret<Arg>());  // dh0

// Which engine runs the bfloat16 matmuls in this process: 2 AMX, 1
// AVX512_BF16, 0 none (the build's target has neither).
extern "C" int SeqclfBf16Engine() { return Bf16Engine(); }

// The vector width and register block this build uses (set by the -march it
// was built for, not by the CPU that runs it), for tests and the benchmark.
extern "C" int SeqclfKernelLanes() { return kLanes; }
extern "C" int SeqclfKernelBlockRows() { return kMaxRows; }
extern "C" int SeqclfKernelBlockVecs() { return kPanelVecs; }
