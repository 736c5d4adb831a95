// kernels/nn.cu: the network layers of src/nn/layers as f32 kernels, for `ufm train --device
// cuda` (src/nn/cuda). GEMMs (convolution on the im2col buffer, linear layers) are cuBLAS SGEMM
// calls made from Rust; everything else is here.
//
// Layouts: activations are NCHW row-major (`l` = H*W values per (n, c) plane; fully connected
// activations are N x C with l = 1). The im2col buffer is `cols[(c*k + p)*k + q][(n*oh + i)*ow + j]`
// (C*k*k rows of N*oh*ow), as the CPU layer, so one SGEMM gives the output in CNHW order and a
// permute kernel brings it back to NCHW. Reductions accumulate in double, as the CPU code.
// Every kernel grid-strides, so the launch size only affects speed. Index arithmetic is 32-bit
// (64-bit division is slow on GPUs): the Rust side refuses tensors of 2^31 or more elements.

// ---------------------------------------------------------------------------------------------
// Convolution helpers

// cols[r][col], r = (ci, p, q), col = (ni, i, j); zero where the window reads padding.
extern "C" __global__ void nn_im2col_f32(const float* __restrict__ x, int n, int c, int h, int w,
                                         int k, int s, int pad, int oh, int ow,
                                         float* __restrict__ cols) {
    const int ncol = n * oh * ow;
    const int total = c * k * k * ncol;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int col = t % ncol;
        const int r = t / ncol;
        const int ci = r / (k * k), p = (r / k) % k, q = r % k;
        const int j = col % ow;
        const int i = (col / ow) % oh;
        const int ni = col / (ow * oh);
        const int yy = i * s + p - pad, xx = j * s + q - pad;
        float v = 0.0f;
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) v = x[((ni * c + ci) * h + yy) * w + xx];
        cols[t] = v;
    }
}

// x[ni][ci][yy][xx] = sum of the cols entries that im2col copied from it (a gather: each input
// element visits the (p, q, i, j) with i*s + p - pad = yy, j*s + q - pad = xx; no atomics).
// The sum runs over p, then q, as the CPU col2im.
extern "C" __global__ void nn_col2im_f32(const float* __restrict__ cols, int n, int c, int h,
                                         int w, int k, int s, int pad, int oh, int ow,
                                         float* __restrict__ x) {
    const int ncol = n * oh * ow;
    const int total = n * c * h * w;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int xx = t % w;
        const int yy = (t / w) % h;
        const int ci = (t / (w * h)) % c;
        const int ni = t / (w * h * c);
        float acc = 0.0f;
        for (int p = 0; p < k; ++p) {
            const int iy = yy + pad - p;
            if (iy < 0 || iy % s != 0) continue;
            const int i = iy / s;
            if (i >= oh) continue;
            for (int q = 0; q < k; ++q) {
                const int jx = xx + pad - q;
                if (jx < 0 || jx % s != 0) continue;
                const int j = jx / s;
                if (j >= ow) continue;
                const int r = (ci * k + p) * k + q;
                acc += cols[r * ncol + (ni * oh + i) * ow + j];
            }
        }
        x[t] = acc;
    }
}

// y[ci][ni][j] = x[ni][ci][j]  (NCHW -> CNHW, l = H*W).
extern "C" __global__ void nn_nchw_to_cnhw_f32(const float* __restrict__ x, int n, int c, int l,
                                               float* __restrict__ y) {
    const int total = n * c * l;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int j = t % l;
        const int ci = (t / l) % c;
        const int ni = t / (l * c);
        y[(ci * n + ni) * l + j] = x[t];
    }
}

// y[ni][ci][j] = x[ci][ni][j]  (CNHW -> NCHW).
extern "C" __global__ void nn_cnhw_to_nchw_f32(const float* __restrict__ x, int n, int c, int l,
                                               float* __restrict__ y) {
    const int total = n * c * l;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int j = t % l;
        const int ci = (t / l) % c;
        const int ni = t / (l * c);
        y[t] = x[(ci * n + ni) * l + j];
    }
}

// ---------------------------------------------------------------------------------------------
// Batch normalisation over (N, H, W) per channel; x is N x C x L.

// One block per channel (grid = C, block 256). Batch mean and biased variance (two passes in
// double), invstd = 1 / sqrt(var + eps); running statistics updated with the unbiased variance:
// r <- (1 - m) r + m s, exactly as the CPU layer (and PyTorch).
extern "C" __global__ void nn_bn_stats_f32(const float* __restrict__ x, int n, int c, int l,
                                           double momentum, double eps, float* __restrict__ mean,
                                           float* __restrict__ invstd,
                                           float* __restrict__ running_mean,
                                           float* __restrict__ running_var) {
    __shared__ double s_mu;
    const int ci = blockIdx.x;
    if (ci >= c) return;
    const int m = n * l;
    double acc = 0.0;
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
        const int ni = t / l, j = t % l;
        acc += (double)x[(ni * c + ci) * l + j];
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) s_mu = acc / (double)m;
    __syncthreads();
    const double mu = s_mu;
    double sq = 0.0;
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
        const int ni = t / l, j = t % l;
        const double d = (double)x[(ni * c + ci) * l + j] - mu;
        sq += d * d;
    }
    sq = block_sum(sq);
    if (threadIdx.x == 0) {
        const double var = sq / (double)m;
        const double mo = momentum;
        mean[ci] = (float)mu;
        invstd[ci] = (float)(1.0 / sqrt(var + eps));
        running_mean[ci] = (float)((1.0 - mo) * (double)running_mean[ci] + mo * mu);
        running_var[ci] = (float)((1.0 - mo) * (double)running_var[ci] +
                                  mo * var * (double)m / (double)(m - 1));
    }
}

// Evaluation statistics: mean = running_mean, invstd = 1 / sqrt(running_var + eps).
extern "C" __global__ void nn_bn_eval_stats_f32(const float* __restrict__ running_mean,
                                                const float* __restrict__ running_var, int c,
                                                double eps, float* __restrict__ mean,
                                                float* __restrict__ invstd) {
    for (int ci = blockIdx.x * blockDim.x + threadIdx.x; ci < c; ci += gridDim.x * blockDim.x) {
        mean[ci] = running_mean[ci];
        invstd[ci] = (float)(1.0 / sqrt((double)running_var[ci] + eps));
    }
}

// y = gamma (x - mean) invstd + beta [+ res] [then max(., 0)]. `res` is read only when has_res.
extern "C" __global__ void nn_bn_fwd_f32(const float* __restrict__ x,
                                         const float* __restrict__ mean,
                                         const float* __restrict__ invstd,
                                         const float* __restrict__ gamma,
                                         const float* __restrict__ beta,
                                         const float* __restrict__ res, int has_res, int relu,
                                         int n, int c, int l, float* __restrict__ y) {
    const int total = n * c * l;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int ci = (t / l) % c;
        const float h = (x[t] - mean[ci]) * invstd[ci];
        float v = h * gamma[ci] + beta[ci];
        if (has_res) v += res[t];
        if (relu) v = v > 0.0f ? v : 0.0f;
        y[t] = v;
    }
}

// One block per channel: sums[2c] = sum dy, sums[2c+1] = sum dy * xhat (double, stored as
// float as the CPU layer does); dbeta[c] = sum dy, dgamma[c] = sum dy * xhat (written).
extern "C" __global__ void nn_bn_bwd_reduce_f32(const float* __restrict__ dy,
                                                const float* __restrict__ x,
                                                const float* __restrict__ mean,
                                                const float* __restrict__ invstd, int n, int c,
                                                int l, float* __restrict__ dgamma,
                                                float* __restrict__ dbeta,
                                                float* __restrict__ sums) {
    const int ci = blockIdx.x;
    if (ci >= c) return;
    const int m = n * l;
    const float mu = mean[ci], inv = invstd[ci];
    double sd = 0.0, sdh = 0.0;
    for (int t = threadIdx.x; t < m; t += blockDim.x) {
        const int at = ((t / l) * c + ci) * l + t % l;
        const float d = dy[at];
        const float h = (x[at] - mu) * inv;
        sd += (double)d;
        sdh += (double)(d * h);
    }
    sd = block_sum(sd);
    sdh = block_sum(sdh);
    if (threadIdx.x == 0) {
        sums[2 * ci] = (float)sd;
        sums[2 * ci + 1] = (float)sdh;
        dbeta[ci] = (float)sd;
        dgamma[ci] = (float)sdh;
    }
}

// dx = gamma invstd / M (M dy - sum dy - xhat sum dy xhat) in training, gamma invstd dy in eval.
extern "C" __global__ void nn_bn_bwd_dx_f32(const float* __restrict__ dy,
                                            const float* __restrict__ x,
                                            const float* __restrict__ mean,
                                            const float* __restrict__ invstd,
                                            const float* __restrict__ gamma,
                                            const float* __restrict__ sums, int train, int n,
                                            int c, int l, float* __restrict__ dx) {
    const int total = n * c * l;
    const float m = (float)(n * l);
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int ci = (t / l) % c;
        const float d = dy[t];
        if (train) {
            const float h = (x[t] - mean[ci]) * invstd[ci];
            dx[t] = gamma[ci] * invstd[ci] / m * (m * d - sums[2 * ci] - h * sums[2 * ci + 1]);
        } else {
            dx[t] = gamma[ci] * invstd[ci] * d;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

// y = max(x, 0).
extern "C" __global__ void nn_relu_fwd_f32(const float* __restrict__ x, long long len,
                                           float* __restrict__ y) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x) {
        const float v = x[t];
        y[t] = v > 0.0f ? v : 0.0f;
    }
}

// dx = dy where y > 0, else 0 (PyTorch: zero gradient at 0). dx may be dy.
extern "C" __global__ void nn_relu_bwd_f32(const float* dy, const float* __restrict__ y,
                                           long long len, float* dx) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x)
        dx[t] = y[t] > 0.0f ? dy[t] : 0.0f;
}

// y += a x.
extern "C" __global__ void nn_axpy_f32(float* __restrict__ y, const float* __restrict__ x, float a,
                                       long long len) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x)
        y[t] += a * x[t];
}

// y += x (residual add).
extern "C" __global__ void nn_add_f32(float* __restrict__ y, const float* __restrict__ x,
                                      long long len) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x)
        y[t] += x[t];
}

// y[i][j] += b[j] (linear-layer bias), y rows x cols.
extern "C" __global__ void nn_bias_rows_f32(float* __restrict__ y, const float* __restrict__ b,
                                            int rows, int cols) {
    const int total = rows * cols;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x)
        y[t] += b[t % cols];
}

// out[j] = sum_i x[i][j] (double accumulation), x rows x cols; one thread per column.
extern "C" __global__ void nn_colsum_f32(const float* __restrict__ x, int rows, int cols,
                                         float* __restrict__ out) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int i = 0; i < rows; ++i) s += (double)x[(long long)i * cols + j];
        out[j] = (float)s;
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling

// Max over k x k windows (stride s, padding counts as -inf); arg = flat index h*w of the first
// maximum in window order (a NaN wins, as on the CPU). planes = N*C.
extern "C" __global__ void nn_maxpool_fwd_f32(const float* __restrict__ x, int planes, int h,
                                              int w, int k, int s, int pad, int oh, int ow,
                                              float* __restrict__ y, int* __restrict__ arg) {
    const int total = planes * oh * ow;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int j = t % ow;
        const int i = (t / ow) % oh;
        const int pl = t / (ow * oh);
        const float* plane = x + pl * h * w;
        float best = ufm_neg_inf<float>();
        int bi = 0;
        for (int p = 0; p < k; ++p) {
            const int yy = i * s + p - pad;
            if (yy < 0 || yy >= h) continue;
            for (int q = 0; q < k; ++q) {
                const int xx = j * s + q - pad;
                if (xx < 0 || xx >= w) continue;
                const int idx = yy * w + xx;
                const float v = plane[idx];
                if (v > best || isnan(v)) {
                    best = v;
                    bi = idx;
                }
            }
        }
        y[t] = best;
        arg[t] = bi;
    }
}

// dx[pl][idx] = sum of dy over the windows whose arg-max is idx (a gather over the at most
// ceil(k/s)^2 windows containing idx, in output order as the CPU loop; no atomics).
extern "C" __global__ void nn_maxpool_bwd_f32(const float* __restrict__ dy,
                                              const int* __restrict__ arg, int planes, int h,
                                              int w, int k, int s, int pad, int oh, int ow,
                                              float* __restrict__ dx) {
    const int total = planes * h * w;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x) {
        const int xx = t % w;
        const int yy = (t / w) % h;
        const int pl = t / (w * h);
        const int idx = yy * w + xx;
        // windows i with i*s - pad <= yy <= i*s - pad + k - 1
        int i0 = yy + pad - k + 1;
        i0 = i0 <= 0 ? 0 : (i0 + s - 1) / s;
        int i1 = (yy + pad) / s;
        if (i1 > oh - 1) i1 = oh - 1;
        int j0 = xx + pad - k + 1;
        j0 = j0 <= 0 ? 0 : (j0 + s - 1) / s;
        int j1 = (xx + pad) / s;
        if (j1 > ow - 1) j1 = ow - 1;
        float acc = 0.0f;
        for (int i = i0; i <= i1; ++i)
            for (int j = j0; j <= j1; ++j) {
                const int o = (pl * oh + i) * ow + j;
                if (arg[o] == idx) acc += dy[o];
            }
        dx[t] = acc;
    }
}

// y[pl] = mean of the l values of plane pl (one warp per plane, double accumulation).
extern "C" __global__ void nn_avgpool_fwd_f32(const float* __restrict__ x, int planes, int l,
                                              float* __restrict__ y) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long pl = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         pl < planes; pl += warps) {
        double s = 0.0;
        for (int j = lane; j < l; j += 32) s += (double)x[pl * l + j];
        s = warp_sum(s);
        if (lane == 0) y[pl] = (float)(s / (double)l);
    }
}

// dx[pl][j] = dy[pl] / l.
extern "C" __global__ void nn_avgpool_bwd_f32(const float* __restrict__ dy, int planes, int l,
                                              float* __restrict__ dx) {
    const float sc = (float)(1.0 / (double)l);
    const int total = planes * l;
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < total; t += gridDim.x * blockDim.x)
        dx[t] = dy[t / l] * sc;
}

// ---------------------------------------------------------------------------------------------
// Losses (mean over the batch, as src/nn/layers/loss.rs; arithmetic in double)

// Softmax cross-entropy, one warp per row: dz = (softmax(z) - onehot(y)) / b, loss_rows[i] =
// logsumexp(z_i) - z_{i,y_i}.
extern "C" __global__ void nn_ce_f32(const float* __restrict__ z, const u32* __restrict__ labels,
                                     int b, int k, float* __restrict__ dz,
                                     double* __restrict__ loss_rows) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long i = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); i < b;
         i += warps) {
        const float* zi = z + i * k;
        double m = ufm_neg_inf<double>();
        for (int j = lane; j < k; j += 32) m = fmax(m, (double)zi[j]);
        m = warp_max(m);
        double s = 0.0;
        for (int j = lane; j < k; j += 32) s += exp((double)zi[j] - m);
        s = warp_sum(s);
        const double lse = m + log(s);
        const int y = (int)labels[i];
        for (int j = lane; j < k; j += 32) {
            const double p = exp((double)zi[j] - lse);
            dz[i * k + j] = (float)((p - (j == y ? 1.0 : 0.0)) / (double)b);
        }
        if (lane == 0) loss_rows[i] = lse - (double)zi[y];
    }
}

// nn.MSELoss against one-hot targets: dz = 2 (z - onehot) / (b k), loss_rows[i] =
// sum_j (z_ij - onehot_ij)^2 (the caller divides the total by b k).
extern "C" __global__ void nn_mse_f32(const float* __restrict__ z, const u32* __restrict__ labels,
                                      int b, int k, float* __restrict__ dz,
                                      double* __restrict__ loss_rows) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    const double nk = (double)b * (double)k;
    for (long long i = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); i < b;
         i += warps) {
        const int y = (int)labels[i];
        double s = 0.0;
        for (int j = lane; j < k; j += 32) {
            const double r = (double)z[i * k + j] - (j == y ? 1.0 : 0.0);
            s += r * r;
            dz[i * k + j] = (float)(2.0 * r / nk);
        }
        s = warp_sum(s);
        if (lane == 0) loss_rows[i] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizers (coupled weight decay d = g + wd w, as src/nn/optim.rs)

// SGD with momentum: buf = d on the first step, else mu buf + d; w -= lr buf.
extern "C" __global__ void nn_sgd_f32(float* __restrict__ w, const float* __restrict__ g,
                                      float* __restrict__ buf, long long len, float lr, float wd,
                                      float mu, int first) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x) {
        const float d = g[t] + wd * w[t];
        const float mb = first ? d : mu * buf[t] + d;
        buf[t] = mb;
        w[t] -= lr * mb;
    }
}

// Adam: m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2, w -= step m / (sqrt(v) / bc2 + eps)
// with step = lr / (1 - b1^t) and bc2 = sqrt(1 - b2^t) computed on the host.
extern "C" __global__ void nn_adam_f32(float* __restrict__ w, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v, long long len,
                                       float step, float bc2, float b1, float b2, float eps,
                                       float wd) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < len;
         t += (long long)gridDim.x * blockDim.x) {
        const float d = g[t] + wd * w[t];
        const float mt = b1 * m[t] + (1.0f - b1) * d;
        const float vt = b2 * v[t] + (1.0f - b2) * d * d;
        m[t] = mt;
        v[t] = vt;
        w[t] -= step * mt / (sqrtf(vt) / bc2 + eps);
    }
}
