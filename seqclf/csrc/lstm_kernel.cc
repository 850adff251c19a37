// An LSTM layer (seqclf.fast_lstm's arithmetic) as XLA:CPU custom calls.
//
// Why: under XLA:CPU each time step of the scanned cell is a dozen separate
// kernels (a dot, several elementwise fusions, slices and updates), about
// 3,200 per training step, and small dots leave most of the FMA units idle.
// Here one call runs a layer's whole forward pass and one its whole backward
// pass. Each time step is one register-blocked matmul of [x_t, h] with
// [w_x; w_h] (packed once per call) and one pass over the gates that stays in
// registers; the backward pass also adds up the weight gradients step by
// step while the step's data is in cache. Batch rows never interact, so the
// batch is cut into slices run on XLA's intra-op thread pool. The arithmetic
// is fast_lstm's (gate order i, j, f, o; one tanh for all four gates,
// sigmoid(x) = (1 + tanh(x/2)) / 2; float32 throughout), so the two agree to
// float rounding (tests/test_lstm_kernel.py).
//
// Written with GCC/Clang vector extensions rather than intrinsics: with
// -march=native they become AVX-512 on the machine that compiled them, which
// is the machine that runs them (seqclf.lstm_kernel builds this file on first
// use); other CPUs get the same code in narrower vectors (correct, not tuned).
//
// Shapes (row-major, time-major): x (T, B, I); w_x (I, 4H); b (4H); w_h
// (H, 4H); c, h (B, H). H must be a multiple of 16 (checked in Python and
// here).

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;                 // floats per vector
constexpr int kMaxRows = 6;                // micro-kernel rows (register block)
constexpr int kMaxPanel = 4 * kLanes;      // micro-kernel columns
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef float vfu __attribute__((vector_size(4 * kLanes), aligned(4),
                                 may_alias));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
static_assert(kLanes == 16, "splat lists one x per lane");
inline vf splat(float x) {  // written out: `vf{} + x` costs an add per use
  return vf{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
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

// C[0:R, 0:V*16] (+)= A[0:R, 0:K] @ panel, accumulators in registers.
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

template <int V, bool kAdd>
void PanelRows(const float* a, int lda, int rows, const float* panel, int k,
               float* c, int ldc) {
  int r = 0;
  for (; r + kMaxRows <= rows; r += kMaxRows)
    MicroKernel<kMaxRows, V, kAdd>(a + r * lda, lda, panel, k, c + r * ldc,
                                   ldc);
  a += r * lda;
  c += r * ldc;
  switch (rows - r) {
    case 5: MicroKernel<5, V, kAdd>(a, lda, panel, k, c, ldc); break;
    case 4: MicroKernel<4, V, kAdd>(a, lda, panel, k, c, ldc); break;
    case 3: MicroKernel<3, V, kAdd>(a, lda, panel, k, c, ldc); break;
    case 2: MicroKernel<2, V, kAdd>(a, lda, panel, k, c, ldc); break;
    case 1: MicroKernel<1, V, kAdd>(a, lda, panel, k, c, ldc); break;
    default: break;
  }
}

// C (rows, N) = A (rows, K) @ B, or C += A @ B when kAdd; A and C row-major
// with leading dimensions K and N.
template <bool kAdd = false>
void Matmul(const float* a, int rows, const Packed& b, float* c) {
  const int k = b.k(), n = b.n();
  for (int n0 = 0; n0 < n; n0 += kMaxPanel) {
    const float* panel = b.panel(n0);
    switch (std::min(kMaxPanel, n - n0) / kLanes) {
      case 4: PanelRows<4, kAdd>(a, k, rows, panel, k, c + n0, n); break;
      case 3: PanelRows<3, kAdd>(a, k, rows, panel, k, c + n0, n); break;
      case 2: PanelRows<2, kAdd>(a, k, rows, panel, k, c + n0, n); break;
      default: PanelRows<1, kAdd>(a, k, rows, panel, k, c + n0, n); break;
    }
  }
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
  if (d.h % kLanes != 0)
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

// A slice needs this many register blocks (48 rows) to pay for running it
// on another thread: with the CPU split into one device per core, each
// device's 50 rows of a batch of 100 ran 6-22% faster unsplit in
// interleaved benchmarks, while 128 or 512 rows per device gain from a split.
constexpr int kMinSliceBlocks = 8;

// The batch cut into at most one slice per pool thread, of whole register
// blocks, each at least kMinSliceBlocks (one slice when the batch is small).
struct Slicing {
  int batch, blocks, slices;
  Slicing(ffi::ThreadPool& pool, int batch)
      : batch(batch), blocks((batch + kMaxRows - 1) / kMaxRows) {
    slices = static_cast<int>(
        std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1),
                          std::max(blocks / kMinSliceBlocks, 1)));
  }
  Rows rows(int i) const {
    return Rows{std::min(batch, i * blocks / slices * kMaxRows),
                std::min(batch, (i + 1) * blocks / slices * kMaxRows)};
  }
};

// Runs fn(i) for i in [0, n) on the intra-op thread pool, the caller taking
// work too. A pool task that starts after every index is taken returns
// without touching fn, so the caller waits only for work already running:
// no deadlock when other calls occupy the pool.
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int n, const Fn& fn) {
  if (n <= 1) {
    if (n == 1) fn(0);
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
  for (int i = 1; i < n; ++i) pool.Schedule(decltype(work)(work));
  work();
  while (progress->done.load(std::memory_order_acquire) < n)
    std::this_thread::yield();
}

// Forward recurrence of rows `r`: per step gates = [x_t, h] @ [w_x; w_h] + b
// as one matmul. Residuals (tanh of the scaled gates, the cell state before
// each step, tanh of the cell state after it) are written only when `ts` is
// non-null, i.e. when a backward pass will need them.
void Forward(const Dims& d, Rows r, const Packed& w, const float* x,
             const float* bias, const float* c0, const float* h0,
             float forget_bias, float* hs, float* c_last, float* ts,
             float* c_prev, float* tanh_cs) {
  const int h = d.h, g = 4 * d.h, k = d.k();
  const size_t first = static_cast<size_t>(r.r0) * h;
  const size_t state = static_cast<size_t>(r.n()) * h;
  std::vector<float> gates(static_cast<size_t>(r.n()) * g);
  std::vector<float> c(c0 + first, c0 + first + state);
  std::vector<float> xh(static_cast<size_t>(r.n()) * k);  // rows [x_t, h]
  for (int b = 0; b < r.n(); ++b)
    std::memcpy(&xh[static_cast<size_t>(b) * k + d.in], h0 + first + b * h,
                h * sizeof(float));
  const vf half = splat(0.5f), f_shift = splat(0.5f * forget_bias);
  for (int t = 0; t < d.t; ++t) {
    const size_t step = static_cast<size_t>(t) * d.b + r.r0;
    for (int b = 0; b < r.n(); ++b)
      std::memcpy(&xh[static_cast<size_t>(b) * k], x + (step + b) * d.in,
                  d.in * sizeof(float));
    Matmul(xh.data(), r.n(), w, gates.data());
    for (int b = 0; b < r.n(); ++b) {
      const size_t row = step + b;
      const float* z = gates.data() + static_cast<size_t>(b) * g;
      float* h_in = xh.data() + static_cast<size_t>(b) * k + d.in;
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
        const vf h_new = (half * to + half) * tanh_c;
        store(c.data() + at, c_new);
        store(h_in + j, h_new);
        store(hs + row * h + j, h_new);
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
    }
  }
  std::memcpy(c_last + first, c.data(), state * sizeof(float));
}

// Reverse recurrence of rows `r`: carries only (dc, dh) and writes every
// step's gate gradient. While each step's [x_t, h_{t-1}] and gate gradient
// are in cache it adds these rows' share of the weight gradients, Σ_t [x_t,
// h_{t-1}]ᵀ dgates_t to dw ((I + H), 4H) and Σ_t dgates_t to db (4H).
void Backward(const Dims& d, Rows r, const Packed& w_t, const float* dhs,
              const float* dc_last, const float* dh_last, const float* ts,
              const float* c_prev, const float* tanh_cs, const float* x,
              const float* hs, const float* h0, float* dgates, float* dc0,
              float* dh0, float* dw, float* db) {
  const int h = d.h, g = 4 * d.h, n = r.n();
  const size_t first = static_cast<size_t>(r.r0) * h;
  const size_t state = static_cast<size_t>(n) * h;
  std::vector<float> dc(dc_last + first, dc_last + first + state);
  std::vector<float> dh(dh_last + first, dh_last + first + state);
  std::vector<float> xh_t(static_cast<size_t>(d.k()) * n);  // [x, h]ᵀ (I+H, n)
  Packed dgates_t(n, g);
  const vf half = splat(0.5f), quarter = splat(0.25f), one = splat(1.0f);
  for (int t = d.t - 1; t >= 0; --t) {
    const size_t step = static_cast<size_t>(t) * d.b + r.r0;
    for (int b = 0; b < n; ++b) {
      const float* gate_t = ts + (step + b) * g;
      float* out = dgates + (step + b) * g;
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
    const float* x_t = x + step * d.in;
    const float* h_prev = t ? hs + (step - d.b) * h : h0 + first;
    for (int b = 0; b < n; ++b) {
      for (int i = 0; i < d.in; ++i)
        xh_t[static_cast<size_t>(i) * n + b] = x_t[b * d.in + i];
      for (int i = 0; i < h; ++i)
        xh_t[static_cast<size_t>(d.in + i) * n + b] = h_prev[b * h + i];
    }
    dgates_t.Pack(dgates + step * g, g);
    Matmul</*kAdd=*/true>(xh_t.data(), d.k(), dgates_t, dw);
    Matmul(dgates + step * g, n, w_t, dh.data());
  }
  std::memcpy(dc0 + first, dc.data(), state * sizeof(float));
  std::memcpy(dh0 + first, dh.data(), state * sizeof(float));
}

using Arg = ffi::Buffer<ffi::F32>;
using Ret = ffi::ResultBuffer<ffi::F32>;

// Inputs: x (T, B, I), w_x (I, 4H), b (4H), w_h (H, 4H), c0, h0 (B, H).
// Results: hs (T, B, H), c_T (B, H) [, ts (T, B, 4H), c_prev, tanh_cs
// (T, B, H) when training].
ffi::Error ForwardAny(ffi::ThreadPool& pool, const Arg& x, const Arg& w_x,
                      const Arg& bias, const Arg& w_h, const Arg& c0,
                      const Arg& h0, float forget_bias, Ret& hs, Ret& c_last,
                      float* ts, float* c_prev, float* tanh_cs) {
  const Dims d = DimsOf(x, w_h);
  if (ffi::Error e = CheckDims(d, w_x, w_h); e.failure()) return e;
  const Packed w(w_x.typed_data(), d.in, w_h.typed_data(), d.k(), 4 * d.h);
  const Slicing slicing(pool, d.b);
  ParallelFor(pool, slicing.slices, [&](int i) {
    Forward(d, slicing.rows(i), w, x.typed_data(), bias.typed_data(),
            c0.typed_data(), h0.typed_data(), forget_bias, hs->typed_data(),
            c_last->typed_data(), ts, c_prev, tanh_cs);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, Arg x, Arg w_x, Arg bias,
                       Arg w_h, Arg c0, Arg h0, float forget_bias, Ret hs,
                       Ret c_last) {
  return ForwardAny(pool, x, w_x, bias, w_h, c0, h0, forget_bias, hs, c_last,
                    nullptr, nullptr, nullptr);
}

ffi::Error ForwardTrainImpl(ffi::ThreadPool pool, Arg x, Arg w_x, Arg bias,
                            Arg w_h, Arg c0, Arg h0, float forget_bias,
                            Ret hs, Ret c_last, Ret ts, Ret c_prev,
                            Ret tanh_cs) {
  return ForwardAny(pool, x, w_x, bias, w_h, c0, h0, forget_bias, hs, c_last,
                    ts->typed_data(), c_prev->typed_data(),
                    tanh_cs->typed_data());
}

// Inputs: the forward's cotangents dhs, dc_T, dh_T; its residuals ts,
// c_prev, tanh_cs; x, hs, h0, w_x, w_h. Results: dgates (T, B, 4H) (for the
// input gradient, formed in XLA only where something needs it), dw_x, db,
// dw_h, dc0, dh0.
ffi::Error BackwardImpl(ffi::ThreadPool pool, Arg dhs, Arg dc_last,
                        Arg dh_last, Arg ts, Arg c_prev, Arg tanh_cs, Arg x,
                        Arg hs, Arg h0, Arg w_x, Arg w_h, Ret dgates,
                        Ret dw_x, Ret db, Ret dw_h, Ret dc0, Ret dh0) {
  const Dims d = DimsOf(x, w_h);
  if (ffi::Error e = CheckDims(d, w_x, w_h); e.failure()) return e;
  const Packed w_t = Packed::Transposed(w_h.typed_data(), 4 * d.h, d.h);
  const Slicing slicing(pool, d.b);
  // One gradient per slice, summed in slice order: deterministic for a
  // given thread count. Each holds [dw_x; dw_h] then db.
  const int g = 4 * d.h;
  const size_t size = static_cast<size_t>(d.k() + 1) * g;
  std::vector<std::vector<float>> grads(slicing.slices,
                                        std::vector<float>(size, 0.0f));
  ParallelFor(pool, slicing.slices, [&](int i) {
    float* dw = grads[i].data();
    Backward(d, slicing.rows(i), w_t, dhs.typed_data(), dc_last.typed_data(),
             dh_last.typed_data(), ts.typed_data(), c_prev.typed_data(),
             tanh_cs.typed_data(), x.typed_data(), hs.typed_data(),
             h0.typed_data(), dgates->typed_data(), dc0->typed_data(),
             dh0->typed_data(), dw, dw + static_cast<size_t>(d.k()) * g);
  });
  for (int i = 1; i < slicing.slices; ++i)
    for (size_t j = 0; j < size; ++j) grads[0][j] += grads[i][j];
  const float* sum = grads[0].data();
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
      .Attr<float>("forget_bias")
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
                                  .Ret<Arg>()   // dgates
                                  .Ret<Arg>()   // dw_x
                                  .Ret<Arg>()   // db
                                  .Ret<Arg>()   // dw_h
                                  .Ret<Arg>()   // dc0
                                  .Ret<Arg>());  // dh0
