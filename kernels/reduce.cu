// kernels/reduce.cu: accumulators for the neural-collapse metrics (src/metrics/stats.rs).
//
// Features X are N x d row-major (row i = h_i), labels u32 in 0..K. All accumulation is in f64,
// as on the CPU. Two passes (exact class means, then moments about them):
//   1. reduce_class_sums_<T>    sums[c][j] = sum_{y_i = c} x_ij, counts[c] = n_c
//                                (classes c0 .. c0 + kc per launch: shared memory holds kc x 32)
//   2. reduce_class_ss_<T>      class_ss[c] = sum_{y_i = c} ||x_i - mu_c||^2
//      reduce_class_scatter_<T> S = sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T   (d x d)
// Outputs must be zeroed by the caller; blocks add into them with f64 atomics.

// grid (row blocks, ceil(d / 32)); block 256; dynamic shared memory kc * 32 doubles + kc u64.
template <typename T>
__device__ __forceinline__ void class_sums_impl(const T* __restrict__ x,
                                                const u32* __restrict__ labels, int n, int d,
                                                int c0, int kc, double* __restrict__ sums,
                                                u64* __restrict__ counts) {
    extern __shared__ double smem[];
    double* ssum = smem;
    u64* scnt = reinterpret_cast<u64*>(smem + kc * 32);
    const int lane = threadIdx.x & 31;
    const int wpb = blockDim.x >> 5;
    const int j = blockIdx.y * 32 + lane;
    for (int t = threadIdx.x; t < kc * 32; t += blockDim.x) ssum[t] = 0.0;
    for (int t = threadIdx.x; t < kc; t += blockDim.x) scnt[t] = 0ULL;
    __syncthreads();
    const long long stride = (long long)gridDim.x * wpb;
    for (long long i = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); i < n; i += stride) {
        const int c = (int)labels[i] - c0;
        if (c < 0 || c >= kc) continue;  // warp-uniform
        if (j < d) atomicAdd(&ssum[c * 32 + lane], (double)x[(size_t)i * d + j]);
        if (blockIdx.y == 0 && lane == 0) atomicAdd(&scnt[c], 1ULL);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < kc * 32; t += blockDim.x) {
        const int c = t >> 5, jj = blockIdx.y * 32 + (t & 31);
        if (jj < d && ssum[t] != 0.0) atomicAdd(&sums[(size_t)(c0 + c) * d + jj], ssum[t]);
    }
    if (blockIdx.y == 0)
        for (int t = threadIdx.x; t < kc; t += blockDim.x)
            if (scnt[t]) atomicAdd(&counts[c0 + t], scnt[t]);
}

// one warp per row; dynamic shared memory k doubles.
template <typename T>
__device__ __forceinline__ void class_ss_impl(const T* __restrict__ x,
                                              const u32* __restrict__ labels, int n, int d,
                                              int k, const double* __restrict__ means,
                                              double* __restrict__ class_ss) {
    extern __shared__ double sss[];
    const int lane = threadIdx.x & 31;
    const int wpb = blockDim.x >> 5;
    for (int t = threadIdx.x; t < k; t += blockDim.x) sss[t] = 0.0;
    __syncthreads();
    const long long stride = (long long)gridDim.x * wpb;
    for (long long i = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); i < n; i += stride) {
        const int c = (int)labels[i];
        const double* mu = means + (size_t)c * d;
        double s = 0.0;
        for (int j = lane; j < d; j += 32) {
            const double dv = (double)x[(size_t)i * d + j] - mu[j];
            s += dv * dv;
        }
        s = warp_sum(s);
        if (lane == 0) atomicAdd(&sss[c], s);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < k; t += blockDim.x)
        if (sss[t] != 0.0) atomicAdd(&class_ss[t], sss[t]);
}

// Tiled centred X^T X: block 16 x 16 threads computes a 64 x 64 tile of S (4 x 4 per thread)
// over the rows of slab blockIdx.z; grid (ceil(d/64), ceil(d/64), slabs).
template <typename T>
__device__ __forceinline__ void class_scatter_impl(const T* __restrict__ x,
                                                   const u32* __restrict__ labels, int n, int d,
                                                   const double* __restrict__ means,
                                                   double* __restrict__ s) {
    __shared__ double ta[16][65];
    __shared__ double tb[16][65];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * 16 + tx;
    const int a0 = blockIdx.y * 64, b0 = blockIdx.x * 64;
    const long long per = ((long long)n + gridDim.z - 1) / gridDim.z;
    const long long r_begin = (long long)blockIdx.z * per;
    const long long r_end = (r_begin + per < n) ? r_begin + per : n;
    double acc[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = 0.0;
    for (long long r0 = r_begin; r0 < r_end; r0 += 16) {
        // 256 threads load 16 rows x 64 columns of each centred tile (4 elements each).
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int flat = tid + 256 * e;  // 0 .. 1023
            const int rr = flat >> 6, cc = flat & 63;
            const long long i = r0 + rr;
            double va = 0.0, vb = 0.0;
            if (i < r_end) {
                const double* mu = means + (size_t)labels[i] * d;
                const int ja = a0 + cc, jb = b0 + cc;
                if (ja < d) va = (double)x[(size_t)i * d + ja] - mu[ja];
                if (jb < d) vb = (double)x[(size_t)i * d + jb] - mu[jb];
            }
            ta[rr][cc] = va;
            tb[rr][cc] = vb;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < 16; ++rr) {
            double av[4], bv[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) av[u] = ta[rr][ty * 4 + u];
#pragma unroll
            for (int v = 0; v < 4; ++v) bv[v] = tb[rr][tx * 4 + v];
#pragma unroll
            for (int u = 0; u < 4; ++u)
#pragma unroll
                for (int v = 0; v < 4; ++v) acc[u][v] += av[u] * bv[v];
        }
        __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int a = a0 + ty * 4 + u, bb = b0 + tx * 4 + v;
            if (a < d && bb < d) atomicAdd(&s[(size_t)a * d + bb], acc[u][v]);
        }
}

#define REDUCE_SUMS_ENTRY(NAME, T)                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* x, const u32* labels, int n, int d, int c0, int kc, double* sums,          \
             u64* counts) {                                                                     \
        class_sums_impl<T>(x, labels, n, d, c0, kc, sums, counts);                              \
    }

#define REDUCE_SS_ENTRY(NAME, T)                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* x, const u32* labels, int n, int d, int k, const double* means,            \
             double* class_ss) {                                                                \
        class_ss_impl<T>(x, labels, n, d, k, means, class_ss);                                  \
    }

#define REDUCE_SCATTER_ENTRY(NAME, T)                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* x, const u32* labels, int n, int d, const double* means, double* s) {     \
        class_scatter_impl<T>(x, labels, n, d, means, s);                                       \
    }

REDUCE_SUMS_ENTRY(reduce_class_sums_f32, float)
REDUCE_SUMS_ENTRY(reduce_class_sums_f64, double)
REDUCE_SS_ENTRY(reduce_class_ss_f32, float)
REDUCE_SS_ENTRY(reduce_class_ss_f64, double)
REDUCE_SCATTER_ENTRY(reduce_class_scatter_f32, float)
REDUCE_SCATTER_ENTRY(reduce_class_scatter_f64, double)
