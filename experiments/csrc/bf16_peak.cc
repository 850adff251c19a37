// The CPU's multiply-add peaks on data held in registers, for
// experiments/bf16_benchmark.py: float32 FMAs (vfmadd, 16 lanes), bfloat16
// dot products (AVX512_BF16's vdpbf16ps: two products per float32 lane) and
// AMX tiles (tdpbf16ps), each run on every core at once with independent
// accumulators, so nothing but the execution units limits them.
// Prints one line per unit: "name GFLOP/s".
//
//   c++ -O3 -march=native bf16_peak.cc -o bf16_peak -pthread && ./bf16_peak

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {

constexpr int kChains = 24;  // independent accumulators, beyond any latency

// Keeps the accumulators' results alive (their sum, after the loop).
#define KEEP(acc)                                              \
  do {                                                         \
    __m512 sum = acc[0];                                       \
    _Pragma("GCC unroll 24") for (int i = 1; i < kChains; ++i) \
        sum = _mm512_add_ps(sum, acc[i]);                      \
    volatile float sink = sum[0];                              \
    (void)sink;                                                \
  } while (0)

// FLOPs done by `iters` rounds of `kChains` instructions of one kind.
double Fma(long iters) {
  __m512 acc[kChains];
#pragma GCC unroll 24
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1e-9f * i);
  const __m512 b = _mm512_set1_ps(1.0000001f);
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) {
      acc[i] = _mm512_fmadd_ps(acc[i], b, b);
      asm volatile("" : "+v"(acc[i]));
    }
  KEEP(acc);
  return 2.0 * 16 * kChains * iters;
}

#ifdef __AVX512BF16__
double Dpbf16(long iters) {
  __m512 acc[kChains];
#pragma GCC unroll 24
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1e-9f * i);
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) {
      acc[i] = _mm512_dpbf16_ps(acc[i], b, b);
      asm volatile("" : "+v"(acc[i]));
    }
  KEEP(acc);
  return 2.0 * 32 * kChains * iters;
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
const TileConfig kConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64},
                            {16, 16, 16, 16, 16, 16, 16, 16}};

// Four independent 16x16 float32 tiles, each += (16x32) @ (32x16) bf16.
double Amx(long iters) {
  alignas(64) static thread_local uint16_t data[16 * 32] = {};
  _tile_loadconfig(&kConfig);
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_loadd(7, data, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  iters /= 16;  // each instruction does 256 x the work of a vector one
  for (long n = 0; n < iters; ++n) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_release();
  return 2.0 * 16 * 16 * 32 * 4 * iters;
}

bool AmxGranted() {
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif

// GFLOP/s of `fn` on `threads` threads at once: each thread times `repeats`
// short bursts and keeps its best rate (on a shared machine the best burst
// is the one the core ran undisturbed); their sum.
template <typename Fn>
double Peak(Fn fn, int threads, long iters, int repeats) {
  std::vector<double> best(threads, 0.0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const double flops = fn(iters);
        const double s = std::chrono::duration<double>(
            std::chrono::steady_clock::now() - t0).count();
        best[i] = std::max(best[i], flops / s / 1e9);
      }
    });
  for (auto& t : pool) t.join();
  double sum = 0;
  for (double b : best) sum += b;
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1])
                               : std::thread::hardware_concurrency();
  const long iters = 20000;  // a burst: about 0.1-0.5 ms
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 300;
  std::printf("fp32_fma %.1f\n", Peak(Fma, threads, iters, repeats));
#ifdef __AVX512BF16__
  std::printf("avx512_bf16 %.1f\n", Peak(Dpbf16, threads, iters, repeats));
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  if (AmxGranted())
    std::printf("amx_bf16 %.1f\n", Peak(Amx, threads, iters, repeats));
#endif
  return 0;
}
