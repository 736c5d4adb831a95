// kernels/ufm.cu: the UFM objective, gradient, fused gradient-descent step and Hessian-vector
// product on the GPU.
//
// Layout (as in src/ufm/problem.rs): W is K x d row-major, H^T is N x d row-major (row i is the
// feature h_i), b has K entries, labels are u32. G = [grad_z l(z_i, y_i)]_i / N is N x K
// row-major. Every kernel grid-strides, so any grid size is correct; sizes only tune speed.
//
// One fused gradient step (the Rust side launches, in order):
//   1. ufm_fwd_<loss>_k<KB>_<T>   reads H once: logits z_i = W h_i + b, loss, G; per-block
//                                  partial sums (loss, ||H||^2) into `partials`.
//   2. ufm_bwd_<mode>_k<KB>_<T>   reads H again: grad_{h_i} = lambda_H h_i + W^T g_i, written
//                                  (mode grad) or applied in place h_i -= lr grad_{h_i} (mode
//                                  step); per-block partial grad_W = G^T H and grad_b = G^T 1.
//   3. ufm_finish_<mode>_<T>      (twice: W, then b) sums the partials, adds lambda x, writes
//                                  the gradient or updates x in place; partial ||x||^2, ||g||^2.
// H is read twice and written once: the minimum for a step whose H update needs grad_W's W.
// KB in {8, 16, 32} is the compile-time class bucket (K <= KB); the logits, G rows and the
// per-column grad_W accumulators live in registers. For K > 32 the Rust side uses cuBLAS GEMMs
// plus ufm_loss_<loss>_<T>, ufm_axpy_<T> and ufm_sumsq_<T>.
//
// HVP in direction (V_W, V_H, v_b): ufm_hvpfwd_<loss>_k<KB>_<T> writes G and
// Q = [hess_z l(z_i) zdot_i]_i / N with zdot_i = V_W h_i + W v_i + v_b; ufm_hvpbwd_k<KB>_<T>
// writes out_{h_i} = lambda_H v_i + W^T q_i + V_W^T g_i and per-block partials of
// out_W = Q^T H + G^T V_H and out_b = Q^T 1; ufm_finish_grad_<T> adds lambda V_W, lambda v_b.

#define LOSS_CE 0
#define LOSS_MSE 1

#define BWD_GRAD 0
#define BWD_STEP 1
#define BWD_HVP 2

// Rows per warp in the forward kernels: keeps the RT x KB logit accumulators (twice that for
// the HVP) within about 64 32-bit registers.
template <typename T, int KB, bool HVP> struct UfmRows {
    static const int raw = (sizeof(T) == 4 ? 64 : 32) / (HVP ? 2 : 1) / KB;
    static const int value = raw > 0 ? raw : 1;
};

// ---------------------------------------------------------------------------------------------
// Forward: one warp per group of RT rows; lane c (< K) ends up holding z_c of each row.
// ---------------------------------------------------------------------------------------------
template <typename T, int KB, int RT, int LOSS, bool HVP>
__device__ __forceinline__ void ufm_fwd_impl(
    const T* __restrict__ ht, const T* __restrict__ w, const T* __restrict__ b,
    const T* __restrict__ vht, const T* __restrict__ vw, const T* __restrict__ vb, int has_b,
    const u32* __restrict__ labels, int n, int d, int k, T inv_n, T* __restrict__ g,
    T* __restrict__ q, double* __restrict__ partials) {
    const int lane = threadIdx.x & 31;
    const int wpb = blockDim.x >> 5;
    const long long gwarp = (long long)blockIdx.x * wpb + (threadIdx.x >> 5);
    const long long nwarps = (long long)gridDim.x * wpb;
    double loss_acc = 0.0, hsq_acc = 0.0;
    for (long long r0 = gwarp * RT; r0 < n; r0 += nwarps * RT) {
        T acc[RT][KB];
        T dacc[RT][KB];
#pragma unroll
        for (int r = 0; r < RT; ++r)
#pragma unroll
            for (int c = 0; c < KB; ++c) {
                acc[r][c] = T(0);
                dacc[r][c] = T(0);
            }
#pragma unroll 2
        for (int j = lane; j < d; j += 32) {
            T h[RT], v[RT];
#pragma unroll
            for (int r = 0; r < RT; ++r) {
                const long long i = r0 + r;
                h[r] = (i < n) ? ht[(size_t)i * d + j] : T(0);
                v[r] = (HVP && i < n) ? vht[(size_t)i * d + j] : T(0);
                if (!HVP) hsq_acc += (double)h[r] * (double)h[r];
            }
#pragma unroll
            for (int c = 0; c < KB; ++c) {
                if (c < k) {
                    const T wv = w[(size_t)c * d + j];
                    T vwv = T(0);
                    if (HVP) vwv = vw[(size_t)c * d + j];
#pragma unroll
                    for (int r = 0; r < RT; ++r) {
                        acc[r][c] += wv * h[r];
                        if (HVP) dacc[r][c] += vwv * h[r] + wv * v[r];
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < RT; ++r) {
            const long long i = r0 + r;
            if (i >= n) break;  // warp-uniform
            T zk = T(0), dzk = T(0);
#pragma unroll
            for (int c = 0; c < KB; ++c) {
                if (c < k) {
                    const T s = warp_sum(acc[r][c]);
                    if (lane == c) zk = s;
                    if (HVP) {
                        const T ds = warp_sum(dacc[r][c]);
                        if (lane == c) dzk = ds;
                    }
                }
            }
            const bool act = lane < k;
            if (has_b && act) {
                zk += b[lane];
                if (HVP) dzk += vb[lane];
            }
            const int y = (int)labels[i];
            const T onehot = (lane == y) ? T(1) : T(0);
            T gk, loss, p = T(0);
            if (LOSS == LOSS_CE) {
                const T m = warp_max(act ? zk : ufm_neg_inf<T>());
                const T e = act ? ufm_exp(zk - m) : T(0);
                const T s = warp_sum(e);
                p = e / s;
                const T zy = __shfl_sync(UFM_FULL_MASK, zk, y);
                loss = ufm_log(s) + m - zy;
                gk = p - onehot;
            } else {
                const T res = act ? zk - onehot : T(0);
                loss = T(0.5) * warp_sum(res * res);
                gk = res;
            }
            if (act) g[(size_t)i * k + lane] = gk * inv_n;
            if (HVP) {
                T qk;
                if (LOSS == LOSS_CE) {
                    const T pv = warp_sum(act ? p * dzk : T(0));
                    qk = p * (dzk - pv);
                } else {
                    qk = dzk;
                }
                if (act) q[(size_t)i * k + lane] = qk * inv_n;
            }
            if (lane == 0) loss_acc += (double)loss;
        }
    }
    if (!HVP) {
        const double ls = block_sum(loss_acc);
        const double hs = block_sum(hsq_acc);
        if (threadIdx.x == 0) {
            partials[2 * blockIdx.x] = ls;
            partials[2 * blockIdx.x + 1] = hs;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward: grid (row blocks, ceil(d / 32) column tiles); lane owns column j, W[:, j] and the
// grad_W[:, j] accumulators sit in registers; the warps of a block split the rows.
// ---------------------------------------------------------------------------------------------
template <typename T, int KB, int MODE>
__device__ __forceinline__ void ufm_bwd_impl(
    T* __restrict__ ht, const T* __restrict__ w, const T* __restrict__ g,
    const T* __restrict__ vht, const T* __restrict__ vw, const T* __restrict__ q,
    T* __restrict__ out, int n, int d, int k, T lam_h, T lr, T* __restrict__ part_w,
    T* __restrict__ part_b, double* __restrict__ partials) {
    __shared__ T sw[KB * 32];
    __shared__ T sb[32];
    const int lane = threadIdx.x & 31;
    const int wpb = blockDim.x >> 5;
    const int j = blockIdx.y * 32 + lane;
    const bool col = j < d;
    for (int t = threadIdx.x; t < KB * 32; t += blockDim.x) sw[t] = T(0);
    if (threadIdx.x < 32) sb[threadIdx.x] = T(0);
    __syncthreads();
    // Registers: W[:, j] (and V_W[:, j]) and the grad_W[:, j] accumulators. The G row is
    // loaded once per warp (lane c holds g_c) and broadcast with shuffles; lane c also keeps
    // the running grad_b[c] sum.
    T wk[KB], vwk[KB], aw[KB];
#pragma unroll
    for (int c = 0; c < KB; ++c) {
        wk[c] = (c < k && col) ? w[(size_t)c * d + j] : T(0);
        vwk[c] = (MODE == BWD_HVP && c < k && col) ? vw[(size_t)c * d + j] : T(0);
        aw[c] = T(0);
    }
    T abl = T(0);
    double ghsq = 0.0;
    // Each warp takes RU consecutive rows per iteration and issues all their loads before any
    // arithmetic, so RU rows of H (and of G) are in flight per warp.
    constexpr int RU = (MODE == BWD_HVP) ? 2 : (sizeof(T) == 4 ? 8 : 4);
    const long long warp_id = (long long)blockIdx.x * wpb + (threadIdx.x >> 5);
    const long long stride = (long long)gridDim.x * wpb * RU;
    for (long long i0 = warp_id * RU; i0 < n; i0 += stride) {
        T gl[RU], ql[RU], h[RU], v[RU];
#pragma unroll
        for (int u = 0; u < RU; ++u) {
            const long long i = i0 + u;
            const bool row = i < n;
            const size_t idx = (size_t)i * d + j;
            gl[u] = (row && lane < k) ? g[(size_t)i * k + lane] : T(0);
            ql[u] = (MODE == BWD_HVP && row && lane < k) ? q[(size_t)i * k + lane] : T(0);
            h[u] = (row && col) ? ht[idx] : T(0);
            v[u] = (MODE == BWD_HVP && row && col) ? vht[idx] : T(0);
        }
#pragma unroll
        for (int u = 0; u < RU; ++u) {
            const long long i = i0 + u;
            const size_t idx = (size_t)i * d + j;
            abl += (MODE == BWD_HVP) ? ql[u] : gl[u];
            if (MODE == BWD_HVP) {
                T o = lam_h * v[u];
#pragma unroll
                for (int c = 0; c < KB; ++c) {
                    if (c < k) {
                        const T gc = __shfl_sync(UFM_FULL_MASK, gl[u], c);
                        const T qc = __shfl_sync(UFM_FULL_MASK, ql[u], c);
                        o += qc * wk[c] + gc * vwk[c];
                        aw[c] += qc * h[u] + gc * v[u];
                    }
                }
                if (col && i < n) out[idx] = o;
            } else {
                T gh = lam_h * h[u];
#pragma unroll
                for (int c = 0; c < KB; ++c) {
                    if (c < k) {
                        const T gc = __shfl_sync(UFM_FULL_MASK, gl[u], c);
                        gh += gc * wk[c];
                        aw[c] += gc * h[u];
                    }
                }
                ghsq += (double)gh * (double)gh;  // rows past n have h = g = 0: gh = 0
                if (col && i < n) {
                    if (MODE == BWD_STEP)
                        ht[idx] = h[u] - lr * gh;
                    else
                        out[idx] = gh;
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < KB; ++c)
        if (c < k) atomicAdd(&sw[c * 32 + lane], aw[c]);
    if (blockIdx.y == 0 && lane < k) atomicAdd(&sb[lane], abl);
    const double gs = block_sum(ghsq);  // synchronises the block
    __syncthreads();
    for (int t = threadIdx.x; t < k * 32; t += blockDim.x) {
        const int c = t >> 5, jj = blockIdx.y * 32 + (t & 31);
        if (jj < d) part_w[((size_t)blockIdx.x * k + c) * d + jj] = sw[t];
    }
    if (blockIdx.y == 0 && threadIdx.x < k)
        part_b[(size_t)blockIdx.x * k + threadIdx.x] = sb[threadIdx.x];
    if (threadIdx.x == 0) partials[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = gs;
}

// ---------------------------------------------------------------------------------------------
// Finish: g_e = sum_r part[r * m + e] + lam * x_e; write g (grad) or x_e -= lr g_e (step).
// partials[2 * block] = sum x_e^2, partials[2 * block + 1] = sum g_e^2 (at the old x).
// ---------------------------------------------------------------------------------------------
template <typename T, bool STEP>
__device__ __forceinline__ void ufm_finish_impl(T* __restrict__ x, const T* __restrict__ part,
                                                int rows, int m, T lam, T lr,
                                                T* __restrict__ grad,
                                                double* __restrict__ partials) {
    double xs = 0.0, gs = 0.0;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < m; e += gridDim.x * blockDim.x) {
        T s = T(0);
        for (int r = 0; r < rows; ++r) s += part[(size_t)r * m + e];
        const T xv = x[e];
        const T gv = s + lam * xv;
        xs += (double)xv * (double)xv;
        gs += (double)gv * (double)gv;
        if (STEP)
            x[e] = xv - lr * gv;
        else
            grad[e] = gv;
    }
    const double a = block_sum(xs);
    const double bb = block_sum(gs);
    if (threadIdx.x == 0) {
        partials[2 * blockIdx.x] = a;
        partials[2 * blockIdx.x + 1] = bb;
    }
}

// ---------------------------------------------------------------------------------------------
// Any-K helpers for the cuBLAS path.
// ---------------------------------------------------------------------------------------------

// z (N x K) holds H W^T on entry; adds b, replaces each row by grad l / N, per-block loss sums.
template <typename T, int LOSS>
__device__ __forceinline__ void ufm_loss_impl(T* __restrict__ z, const T* __restrict__ b,
                                              int has_b, const u32* __restrict__ labels,
                                              int n, int k, T inv_n,
                                              double* __restrict__ partials) {
    const int lane = threadIdx.x & 31;
    const int wpb = blockDim.x >> 5;
    const long long stride = (long long)gridDim.x * wpb;
    double loss_acc = 0.0;
    for (long long i = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); i < n; i += stride) {
        T* zr = z + (size_t)i * k;
        const int y = (int)labels[i];
        if (has_b)
            for (int c = lane; c < k; c += 32) zr[c] += b[c];
        __syncwarp();
        if (LOSS == LOSS_CE) {
            T m = ufm_neg_inf<T>();
            for (int c = lane; c < k; c += 32) m = ufm_max(m, zr[c]);
            m = warp_max(m);
            T s = T(0);
            for (int c = lane; c < k; c += 32) s += ufm_exp(zr[c] - m);
            s = warp_sum(s);
            const T zy = zr[y];
            __syncwarp();
            for (int c = lane; c < k; c += 32) {
                const T p = ufm_exp(zr[c] - m) / s;
                zr[c] = (p - (c == y ? T(1) : T(0))) * inv_n;
            }
            if (lane == 0) loss_acc += (double)(ufm_log(s) + m - zy);
        } else {
            T ss = T(0);
            for (int c = lane; c < k; c += 32) {
                const T res = zr[c] - (c == y ? T(1) : T(0));
                ss += res * res;
                zr[c] = res * inv_n;
            }
            ss = warp_sum(ss);
            if (lane == 0) loss_acc += 0.5 * (double)ss;
        }
    }
    const double ls = block_sum(loss_acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = ls;
}

// y += a x
template <typename T>
__device__ __forceinline__ void ufm_axpy_impl(T* __restrict__ y, const T* __restrict__ x, T a,
                                              long long n) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x)
        y[e] += a * x[e];
}

// partials[block] = sum x_e^2
template <typename T>
__device__ __forceinline__ void ufm_sumsq_impl(const T* __restrict__ x, long long n,
                                               double* __restrict__ partials) {
    double s = 0.0;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x)
        s += (double)x[e] * (double)x[e];
    const double t = block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

// ---------------------------------------------------------------------------------------------
// Entry points: <op>_<variant>_<dtype>. The first macro argument is the literal entry-point
// name (tests/kernel_manifest.rs reads it from here).
// ---------------------------------------------------------------------------------------------

#define UFM_FWD_ENTRY(NAME, T, KB, LOSS)                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* ht, const T* w, const T* b, int has_b, const u32* labels, int n, int d,   \
             int k, T inv_n, T* g, double* partials) {                                          \
        ufm_fwd_impl<T, KB, UfmRows<T, KB, false>::value, LOSS, false>(ht, w, b, nullptr, nullptr, nullptr, has_b, labels, \
                                            n, d, k, inv_n, g, nullptr, partials);              \
    }

#define UFM_HVPFWD_ENTRY(NAME, T, KB, LOSS)                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* ht, const T* w, const T* b, const T* vht, const T* vw, const T* vb,       \
             int has_b, const u32* labels, int n, int d, int k, T inv_n, T* g, T* q) {          \
        ufm_fwd_impl<T, KB, UfmRows<T, KB, true>::value, LOSS, true>(ht, w, b, vht, vw, vb, has_b, labels, n, d, k,       \
                                           inv_n, g, q, nullptr);                               \
    }

#define UFM_BWD_ENTRY(NAME, T, KB, MODE)                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(T* ht, const T* w, const T* g, T* out, int n, int d, int k, T lam_h, T lr,          \
             T* part_w, T* part_b, double* partials) {                                          \
        ufm_bwd_impl<T, KB, MODE>(ht, w, g, nullptr, nullptr, nullptr, out, n, d, k, lam_h, lr, \
                                  part_w, part_b, partials);                                    \
    }

#define UFM_HVPBWD_ENTRY(NAME, T, KB)                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* ht, const T* w, const T* g, const T* vht, const T* vw, const T* q,        \
             T* out, int n, int d, int k, T lam_h, T* part_w, T* part_b, double* partials) {     \
        ufm_bwd_impl<T, KB, BWD_HVP>(const_cast<T*>(ht), w, g, vht, vw, q, out, n, d, k, lam_h, \
                                     T(0), part_w, part_b, partials);                           \
    }

#define UFM_FINISH_ENTRY(NAME, T, STEP)                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(T* x, const T* part, int rows, int m, T lam, T lr, T* grad, double* partials) {    \
        ufm_finish_impl<T, STEP>(x, part, rows, m, lam, lr, grad, partials);                    \
    }

#define UFM_LOSS_ENTRY(NAME, T, LOSS)                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(T* z, const T* b, int has_b, const u32* labels, int n, int k, T inv_n,             \
             double* partials) {                                                                \
        ufm_loss_impl<T, LOSS>(z, b, has_b, labels, n, k, inv_n, partials);                     \
    }

#define UFM_AXPY_ENTRY(NAME, T)                                                                 \
    extern "C" __global__ void __launch_bounds__(256) NAME(T* y, const T* x, T a, long long n) { \
        ufm_axpy_impl<T>(y, x, a, n);                                                           \
    }

#define UFM_SUMSQ_ENTRY(NAME, T)                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const T* x, long long n, double* partials) {                                       \
        ufm_sumsq_impl<T>(x, n, partials);                                                      \
    }

UFM_FWD_ENTRY(ufm_fwd_ce_k8_f32, float, 8, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_ce_k16_f32, float, 16, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_ce_k32_f32, float, 32, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_mse_k8_f32, float, 8, LOSS_MSE)
UFM_FWD_ENTRY(ufm_fwd_mse_k16_f32, float, 16, LOSS_MSE)
UFM_FWD_ENTRY(ufm_fwd_mse_k32_f32, float, 32, LOSS_MSE)
UFM_FWD_ENTRY(ufm_fwd_ce_k8_f64, double, 8, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_ce_k16_f64, double, 16, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_ce_k32_f64, double, 32, LOSS_CE)
UFM_FWD_ENTRY(ufm_fwd_mse_k8_f64, double, 8, LOSS_MSE)
UFM_FWD_ENTRY(ufm_fwd_mse_k16_f64, double, 16, LOSS_MSE)
UFM_FWD_ENTRY(ufm_fwd_mse_k32_f64, double, 32, LOSS_MSE)

UFM_BWD_ENTRY(ufm_bwd_grad_k8_f32, float, 8, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_grad_k16_f32, float, 16, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_grad_k32_f32, float, 32, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_step_k8_f32, float, 8, BWD_STEP)
UFM_BWD_ENTRY(ufm_bwd_step_k16_f32, float, 16, BWD_STEP)
UFM_BWD_ENTRY(ufm_bwd_step_k32_f32, float, 32, BWD_STEP)
UFM_BWD_ENTRY(ufm_bwd_grad_k8_f64, double, 8, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_grad_k16_f64, double, 16, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_grad_k32_f64, double, 32, BWD_GRAD)
UFM_BWD_ENTRY(ufm_bwd_step_k8_f64, double, 8, BWD_STEP)
UFM_BWD_ENTRY(ufm_bwd_step_k16_f64, double, 16, BWD_STEP)
UFM_BWD_ENTRY(ufm_bwd_step_k32_f64, double, 32, BWD_STEP)

UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k8_f32, float, 8, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k16_f32, float, 16, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k32_f32, float, 32, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k8_f32, float, 8, LOSS_MSE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k16_f32, float, 16, LOSS_MSE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k32_f32, float, 32, LOSS_MSE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k8_f64, double, 8, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k16_f64, double, 16, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_ce_k32_f64, double, 32, LOSS_CE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k8_f64, double, 8, LOSS_MSE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k16_f64, double, 16, LOSS_MSE)
UFM_HVPFWD_ENTRY(ufm_hvpfwd_mse_k32_f64, double, 32, LOSS_MSE)

UFM_HVPBWD_ENTRY(ufm_hvpbwd_k8_f32, float, 8)
UFM_HVPBWD_ENTRY(ufm_hvpbwd_k16_f32, float, 16)
UFM_HVPBWD_ENTRY(ufm_hvpbwd_k32_f32, float, 32)
UFM_HVPBWD_ENTRY(ufm_hvpbwd_k8_f64, double, 8)
UFM_HVPBWD_ENTRY(ufm_hvpbwd_k16_f64, double, 16)
UFM_HVPBWD_ENTRY(ufm_hvpbwd_k32_f64, double, 32)

UFM_FINISH_ENTRY(ufm_finish_grad_f32, float, false)
UFM_FINISH_ENTRY(ufm_finish_step_f32, float, true)
UFM_FINISH_ENTRY(ufm_finish_grad_f64, double, false)
UFM_FINISH_ENTRY(ufm_finish_step_f64, double, true)

UFM_LOSS_ENTRY(ufm_loss_ce_f32, float, LOSS_CE)
UFM_LOSS_ENTRY(ufm_loss_mse_f32, float, LOSS_MSE)
UFM_LOSS_ENTRY(ufm_loss_ce_f64, double, LOSS_CE)
UFM_LOSS_ENTRY(ufm_loss_mse_f64, double, LOSS_MSE)

UFM_AXPY_ENTRY(ufm_axpy_f32, float)
UFM_AXPY_ENTRY(ufm_axpy_f64, double)
UFM_SUMSQ_ENTRY(ufm_sumsq_f32, float)
UFM_SUMSQ_ENTRY(ufm_sumsq_f64, double)
