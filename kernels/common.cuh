// kernels/common.cuh: device helpers shared by every kernels/*.cu file.
//
// The Rust side (src/backend/kernels.rs) prepends this file *as text* to each module before
// handing it to NVRTC, followed by a `#line 1 "kernels/<file>.cu"` directive, so nothing is
// #included from disk at run time and compile errors point at the right file and line.
// NVRTC provides the CUDA math functions (expf, exp, logf, log) without any header.

typedef unsigned int u32;
typedef unsigned long long u64;

#define UFM_FULL_MASK 0xffffffffu

__device__ __forceinline__ float ufm_exp(float x) { return expf(x); }
__device__ __forceinline__ double ufm_exp(double x) { return exp(x); }
__device__ __forceinline__ float ufm_log(float x) { return logf(x); }
__device__ __forceinline__ double ufm_log(double x) { return log(x); }
__device__ __forceinline__ float ufm_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double ufm_max(double a, double b) { return fmax(a, b); }

template <typename T> __device__ __forceinline__ T ufm_neg_inf();
template <> __device__ __forceinline__ float ufm_neg_inf<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double ufm_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ULL);
}

// Sum over the 32 lanes of a warp; every lane receives the total (butterfly).
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(UFM_FULL_MASK, v, o);
    return v;
}

// Maximum over the 32 lanes of a warp; every lane receives it.
template <typename T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = ufm_max(v, __shfl_xor_sync(UFM_FULL_MASK, v, o));
    return v;
}

// Sum of `v` over the whole block (any 1-D/2-D shape with a multiple of 32 threads, at most
// 1024). The total is returned in thread 0; every thread must call it (it synchronises).
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double ufm_block_scratch[32];
    const int tid = threadIdx.x + blockDim.x * threadIdx.y;
    const int nthreads = blockDim.x * blockDim.y;
    const int lane = tid & 31, warp = tid >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) ufm_block_scratch[warp] = v;
    __syncthreads();
    double t = 0.0;
    if (warp == 0) {
        t = (lane < (nthreads >> 5)) ? ufm_block_scratch[lane] : 0.0;
        t = warp_sum(t);
    }
    return t;
}
