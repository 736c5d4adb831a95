// CPU emulation of the CUDA execution model for kernels/nn.cu: one std::thread per CUDA
// thread, blocks run one after another, __syncthreads and warp shuffles via barriers.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
#include <math.h>
struct dim3e { unsigned x = 1, y = 1, z = 1; };
struct idx3e { unsigned x = 0, y = 0, z = 0; };
thread_local idx3e threadIdx, blockIdx;
dim3e blockDim, gridDim;
static std::barrier<>* g_block_bar;
static std::vector<std::unique_ptr<std::barrier<>>> g_warp_bars;
static double g_shfl[1024];
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    g_shfl[tid] = (double)v;
    g_warp_bars[warp]->arrive_and_wait();
    T r = (T)g_shfl[(warp << 5) | (lane ^ o)];
    g_warp_bars[warp]->arrive_and_wait();
    return r;
}
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double f; memcpy(&f, &i, 8); return f; }
using std::isnan;
template <typename... P, typename... A> void launch(void (*k)(P...), unsigned grid, unsigned block, A... args) {
    gridDim.x = grid; blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar(block);
        g_block_bar = &bar;
        g_warp_bars.clear();
        for (unsigned w = 0; w < (block + 31) / 32; ++w)
            g_warp_bars.emplace_back(new std::barrier<>(std::min(32u, block - 32 * w)));
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < block; ++t)
            ts.emplace_back([=]() { threadIdx.x = t; blockIdx.x = b; k(args...); });
        for (auto& th : ts) th.join();
    }
}
