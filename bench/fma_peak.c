/* The float32 FMA peak of one core: independent chains of AVX-512 (or, with
 * -DAVX2, AVX2) fused multiply-adds, enough to cover the latency of two FMA units
 * (16 chains in 32 zmm registers, 12 in 16 ymm: more would spill).
 * A ceiling for the convolution tables of RESULTS.md (multiply-adds per second
 * = half the flops printed).
 *
 *   cc -O2 -mavx512f bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 *   cc -O2 -mavx2 -mfma -DAVX2 bench/fma_peak.c -o /tmp/fma_peak2 && /tmp/fma_peak2
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#ifdef AVX2
typedef __m256 vec;
#define CHAINS 12
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define STORE _mm256_storeu_ps
#else
typedef __m512 vec;
#define CHAINS 16
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define STORE _mm512_storeu_ps
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  vec acc[CHAINS];
  const vec b = SET1(1.0000001f), c = SET1(1e-7f);
  for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
  const long n = 200000000;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    const double t0 = now();
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 16
      for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
    }
    const double flops = (double)n * CHAINS * LANES * 2 / (now() - t0);
    if (flops > best) best = flops;
  }
  vec s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
  float out[LANES];
  STORE(out, s);
  printf("%d-lane FMA peak, one core: %.1f GFLOP/s (%.1f G multiply-adds/s) [%g]\n", LANES, best / 1e9,
         best / 2e9, (double)out[0]);
  return 0;
}
