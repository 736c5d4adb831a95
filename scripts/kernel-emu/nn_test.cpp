#include "emu.h"
#include "../../kernels/common.cuh"
#include "../../kernels/nn.cu"
#include <random>
#include <algorithm>
static std::mt19937 rng(7);
static std::vector<float> rnd(size_t n, float s = 1.0f) {
    std::normal_distribution<float> d(0, s);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
static int fails = 0;
static void check(const char* what, const std::vector<double>& a, const std::vector<double>& b, double tol) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i]) || !std::isfinite(b[i])) { num = INFINITY; break; }
        num = std::max(num, std::fabs(a[i] - b[i]));
        den = std::max(den, std::fabs(b[i]));
    }
    double e = num / std::max(den, 1e-300);
    bool ok = e <= tol && a.size() == b.size();
    if (!ok) fails++;
    printf("%-4s %-46s rel err %.2e (tol %.0e)\n", ok ? "ok" : "FAIL", what, e, tol);
}
template <typename T> static std::vector<double> D(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }
// column-major SGEMM as cuBLAS: C = op(A) op(B) + beta C
static void sgemm(bool ta, bool tb, int m, int n, int k, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            double s = 0;
            for (int p = 0; p < k; ++p) {
                double a = ta ? A[i * lda + p] : A[p * lda + i];
                double b = tb ? B[p * ldb + j] : B[j * ldb + p];
                s += a * b;
            }
            C[j * ldc + i] = (float)(s + beta * C[j * ldc + i]);
        }
}
const unsigned G = 3, B = 64;

// The Rust conv layer (src/nn/cuda/model.rs Conv::forward/backward), call for call.
static void conv_layer(int n, int c, int h, int w, int co, int k, int s, int p, const std::vector<float>& x,
                       const std::vector<float>& W, const std::vector<float>& dy,
                       std::vector<float>& y, std::vector<float>& dW, std::vector<float>& dx) {
    int oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
    int nl = n * oh * ow, ckk = c * k * k;
    std::vector<float> cols((size_t)ckk * nl), yt((size_t)co * nl);
    launch(nn_im2col_f32, G, B, x.data(), n, c, h, w, k, s, p, oh, ow, cols.data());
    sgemm(false, false, nl, co, ckk, cols.data(), nl, W.data(), ckk, 0, yt.data(), nl);
    y.assign((size_t)co * nl, 0);
    launch(nn_cnhw_to_nchw_f32, G, B, (const float*)yt.data(), n, co, oh * ow, y.data());
    std::vector<float> dyt((size_t)co * nl);
    launch(nn_nchw_to_cnhw_f32, G, B, dy.data(), n, co, oh * ow, dyt.data());
    dW.assign(W.size(), 0);
    sgemm(true, false, ckk, co, nl, cols.data(), nl, dyt.data(), nl, 0, dW.data(), ckk);
    std::vector<float> dcols((size_t)ckk * nl);
    sgemm(false, true, nl, ckk, co, dyt.data(), nl, W.data(), ckk, 0, dcols.data(), nl);
    dx.assign(x.size(), 0);
    launch(nn_col2im_f32, G, B, (const float*)dcols.data(), n, c, h, w, k, s, p, oh, ow, dx.data());
}

int main() {
    // ---- convolution: direct definition y[n,o,i,j] = sum W[o,c,p,q] x[n,c,i s+p-pad, j s+q-pad]
    int cfgs[][8] = {{2, 3, 7, 6, 4, 3, 2, 1}, {2, 2, 8, 8, 3, 7, 2, 3}, {1, 3, 6, 6, 2, 1, 2, 0}, {2, 2, 5, 5, 3, 3, 1, 1}};
    for (auto& cf : cfgs) {
        int n = cf[0], c = cf[1], h = cf[2], w = cf[3], co = cf[4], k = cf[5], s = cf[6], p = cf[7];
        int oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
        auto x = rnd((size_t)n * c * h * w), W = rnd((size_t)co * c * k * k), dy = rnd((size_t)n * co * oh * ow);
        std::vector<float> y, dW, dx;
        conv_layer(n, c, h, w, co, k, s, p, x, W, dy, y, dW, dx);
        std::vector<double> ry(y.size(), 0), rdW(W.size(), 0), rdx(x.size(), 0);
        for (int a = 0; a < n; ++a) for (int o = 0; o < co; ++o) for (int i = 0; i < oh; ++i) for (int j = 0; j < ow; ++j) {
            size_t yi = (((size_t)a * co + o) * oh + i) * ow + j;
            for (int ci = 0; ci < c; ++ci) for (int pp = 0; pp < k; ++pp) for (int q = 0; q < k; ++q) {
                int yy = i * s + pp - p, xx = j * s + q - p;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                size_t xi = (((size_t)a * c + ci) * h + yy) * w + xx, wi = (((size_t)o * c + ci) * k + pp) * k + q;
                ry[yi] += (double)W[wi] * x[xi];
                rdW[wi] += (double)dy[yi] * x[xi];
                rdx[xi] += (double)dy[yi] * W[wi];
            }
        }
        char buf[128];
        snprintf(buf, sizeof buf, "conv n%d c%d %dx%d -> %d k%d s%d p%d: y", n, c, h, w, co, k, s, p); check(buf, D(y), ry, 1e-5);
        snprintf(buf, sizeof buf, "conv n%d c%d %dx%d -> %d k%d s%d p%d: dW", n, c, h, w, co, k, s, p); check(buf, D(dW), rdW, 1e-5);
        snprintf(buf, sizeof buf, "conv n%d c%d %dx%d -> %d k%d s%d p%d: dx", n, c, h, w, co, k, s, p); check(buf, D(dx), rdx, 1e-5);
    }
    // ---- linear, as Lin::forward/backward: y = x W^T + b
    {
        int rows = 5, ni = 7, no = 4;
        auto x = rnd(rows * ni), W = rnd(no * ni), b = rnd(no), dy = rnd(rows * no);
        std::vector<float> y(rows * no), dW(no * ni), db(no), dx(rows * ni);
        sgemm(true, false, no, rows, ni, W.data(), ni, x.data(), ni, 0, y.data(), no);
        launch(nn_bias_rows_f32, G, B, y.data(), (const float*)b.data(), rows, no);
        sgemm(false, true, ni, no, rows, x.data(), ni, dy.data(), no, 0, dW.data(), ni);
        launch(nn_colsum_f32, G, B, (const float*)dy.data(), rows, no, db.data());
        sgemm(false, false, ni, rows, no, W.data(), ni, dy.data(), no, 0, dx.data(), ni);
        std::vector<double> ry(rows * no), rdW(no * ni), rdb(no), rdx(rows * ni);
        for (int r = 0; r < rows; ++r) for (int o = 0; o < no; ++o) {
            double s = b[o];
            for (int i = 0; i < ni; ++i) { s += (double)x[r * ni + i] * W[o * ni + i]; rdW[o * ni + i] += (double)dy[r * no + o] * x[r * ni + i]; rdx[r * ni + i] += (double)dy[r * no + o] * W[o * ni + i]; }
            ry[r * no + o] = s; rdb[o] += dy[r * no + o];
        }
        check("linear y", D(y), ry, 1e-6); check("linear dW", D(dW), rdW, 1e-6);
        check("linear db", D(db), rdb, 1e-6); check("linear dx", D(dx), rdx, 1e-6);
    }
    // ---- batch norm (train and eval), with residual + relu fused
    for (int train = 0; train < 2; ++train) {
        int n = 3, c = 4, l = 10; size_t tot = (size_t)n * c * l;
        auto x = rnd(tot, 2.0f), dy = rnd(tot), gam = rnd(c), bet = rnd(c), res = rnd(tot);
        std::vector<float> rm = rnd(c), rv(c), mean(c), inv(c), y(tot), y2(tot), dg(c), dbeta(c), sums(2 * c), dx(tot);
        for (auto& v : rv) v = 1.0f + std::fabs(rnd(1)[0]);
        auto rm0 = rm, rv0 = rv;
        if (train) launch(nn_bn_stats_f32, (unsigned)c, B, (const float*)x.data(), n, c, l, 0.1, 1e-5, mean.data(), inv.data(), rm.data(), rv.data());
        else launch(nn_bn_eval_stats_f32, G, B, (const float*)rm.data(), (const float*)rv.data(), c, 1e-5, mean.data(), inv.data());
        launch(nn_bn_fwd_f32, G, B, (const float*)x.data(), (const float*)mean.data(), (const float*)inv.data(), (const float*)gam.data(), (const float*)bet.data(), (const float*)x.data(), 0, 0, n, c, l, y.data());
        launch(nn_bn_fwd_f32, G, B, (const float*)x.data(), (const float*)mean.data(), (const float*)inv.data(), (const float*)gam.data(), (const float*)bet.data(), (const float*)res.data(), 1, 1, n, c, l, y2.data());
        launch(nn_bn_bwd_reduce_f32, (unsigned)c, B, (const float*)dy.data(), (const float*)x.data(), (const float*)mean.data(), (const float*)inv.data(), n, c, l, dg.data(), dbeta.data(), sums.data());
        launch(nn_bn_bwd_dx_f32, G, B, (const float*)dy.data(), (const float*)x.data(), (const float*)mean.data(), (const float*)inv.data(), (const float*)gam.data(), (const float*)sums.data(), train, n, c, l, dx.data());
        std::vector<double> rmean(c), rinv(c), rrm(c), rrv(c), ry(tot), ry2(tot), rdg(c), rdb(c), rdx(tot);
        double M = n * l;
        for (int ci = 0; ci < c; ++ci) {
            double mu = 0, var = 0;
            for (int a = 0; a < n; ++a) for (int j = 0; j < l; ++j) mu += x[(a * c + ci) * l + j];
            mu /= M;
            for (int a = 0; a < n; ++a) for (int j = 0; j < l; ++j) var += std::pow(x[(a * c + ci) * l + j] - mu, 2);
            var /= M;
            if (train) { rmean[ci] = mu; rinv[ci] = 1 / std::sqrt(var + 1e-5); rrm[ci] = 0.9 * rm0[ci] + 0.1 * mu; rrv[ci] = 0.9 * rv0[ci] + 0.1 * var * M / (M - 1); }
            else { rmean[ci] = rm0[ci]; rinv[ci] = 1 / std::sqrt(rv0[ci] + 1e-5); rrm[ci] = rm0[ci]; rrv[ci] = rv0[ci]; }
            double sd = 0, sdh = 0;
            for (int a = 0; a < n; ++a) for (int j = 0; j < l; ++j) {
                size_t t = (a * c + ci) * l + j;
                double xh = (x[t] - rmean[ci]) * rinv[ci];
                ry[t] = gam[ci] * xh + bet[ci];
                ry2[t] = std::max(0.0, ry[t] + res[t]);
                sd += dy[t]; sdh += dy[t] * xh;
            }
            rdg[ci] = sdh; rdb[ci] = sd;
            for (int a = 0; a < n; ++a) for (int j = 0; j < l; ++j) {
                size_t t = (a * c + ci) * l + j;
                double xh = (x[t] - rmean[ci]) * rinv[ci];
                rdx[t] = train ? gam[ci] * rinv[ci] / M * (M * dy[t] - sd - xh * sdh) : gam[ci] * rinv[ci] * dy[t];
            }
        }
        const char* m = train ? "train" : "eval";
        char b[96];
        snprintf(b, sizeof b, "bn %s mean", m); check(b, D(mean), rmean, 1e-6);
        snprintf(b, sizeof b, "bn %s invstd", m); check(b, D(inv), rinv, 1e-6);
        snprintf(b, sizeof b, "bn %s running mean", m); check(b, D(rm), rrm, 1e-6);
        snprintf(b, sizeof b, "bn %s running var", m); check(b, D(rv), rrv, 1e-6);
        snprintf(b, sizeof b, "bn %s y", m); check(b, D(y), ry, 1e-5);
        snprintf(b, sizeof b, "bn %s y + res, relu", m); check(b, D(y2), ry2, 1e-5);
        snprintf(b, sizeof b, "bn %s dgamma", m); check(b, D(dg), rdg, 1e-5);
        snprintf(b, sizeof b, "bn %s dbeta", m); check(b, D(dbeta), rdb, 1e-5);
        snprintf(b, sizeof b, "bn %s dx", m); check(b, D(dx), rdx, 1e-4);
    }
    // ---- relu, axpy, add
    {
        auto x = rnd(300), dy = rnd(300); x[3] = 0;
        std::vector<float> y(300), dx(300);
        launch(nn_relu_fwd_f32, G, B, (const float*)x.data(), 300LL, y.data());
        launch(nn_relu_bwd_f32, G, B, (const float*)dy.data(), (const float*)y.data(), 300LL, dx.data());
        std::vector<double> ry(300), rdx(300);
        for (int i = 0; i < 300; ++i) { ry[i] = std::max(0.0f, x[i]); rdx[i] = x[i] > 0 ? dy[i] : 0; }
        check("relu y", D(y), ry, 0); check("relu dx", D(dx), rdx, 0);
        auto a = rnd(300), b = rnd(300); auto a0 = a;
        launch(nn_axpy_f32, G, B, a.data(), (const float*)b.data(), 0.5f, 300LL);
        launch(nn_add_f32, G, B, a.data(), (const float*)b.data(), 300LL);
        std::vector<double> ra(300);
        for (int i = 0; i < 300; ++i) ra[i] = a0[i] + 1.5 * b[i];
        check("axpy + add", D(a), ra, 1e-6);
    }
    // ---- max pool 3/2/1 (with ties) and average pool
    for (int h : {7, 8, 16}) {
        int planes = 3, k = 3, s = 2, p = 1, oh = (h + 2 * p - k) / s + 1;
        auto x = rnd(planes * h * h);
        x[1] = x[2]; x[h + 1] = x[2];  // ties
        std::vector<float> y(planes * oh * oh), dx(planes * h * h);
        std::vector<int> arg(planes * oh * oh);
        auto dy = rnd(planes * oh * oh);
        launch(nn_maxpool_fwd_f32, G, B, (const float*)x.data(), planes, h, h, k, s, p, oh, oh, y.data(), arg.data());
        launch(nn_maxpool_bwd_f32, G, B, (const float*)dy.data(), (const int*)arg.data(), planes, h, h, k, s, p, oh, oh, dx.data());
        std::vector<double> ry(y.size()), rdx(dx.size(), 0);
        for (int pl = 0; pl < planes; ++pl) for (int i = 0; i < oh; ++i) for (int j = 0; j < oh; ++j) {
            double best = -INFINITY; int bi = 0;
            for (int a = 0; a < k; ++a) for (int b = 0; b < k; ++b) {
                int yy = i * s + a - p, xx = j * s + b - p;
                if (yy < 0 || yy >= h || xx < 0 || xx >= h) continue;
                if (x[pl * h * h + yy * h + xx] > best) { best = x[pl * h * h + yy * h + xx]; bi = yy * h + xx; }
            }
            ry[(pl * oh + i) * oh + j] = best;
            rdx[pl * h * h + bi] += dy[(pl * oh + i) * oh + j];
        }
        char b[64];
        snprintf(b, sizeof b, "max pool %dx%d y", h, h); check(b, D(y), ry, 0);
        snprintf(b, sizeof b, "max pool %dx%d dx", h, h); check(b, D(dx), rdx, 1e-6);
    }
    {
        int planes = 37, l = 50;
        auto x = rnd(planes * l), dy = rnd(planes);
        std::vector<float> y(planes), dx(planes * l);
        launch(nn_avgpool_fwd_f32, G, B, (const float*)x.data(), planes, l, y.data());
        launch(nn_avgpool_bwd_f32, G, B, (const float*)dy.data(), planes, l, dx.data());
        std::vector<double> ry(planes, 0), rdx(planes * l);
        for (int pl = 0; pl < planes; ++pl) { for (int j = 0; j < l; ++j) { ry[pl] += x[pl * l + j] / (double)l; rdx[pl * l + j] = dy[pl] / (double)l; } }
        check("avg pool y", D(y), ry, 1e-6); check("avg pool dx", D(dx), rdx, 1e-6);
    }
    // ---- losses
    for (int k : {10, 40}) {
        int b = 13;
        auto z = rnd(b * k, 3.0f);
        std::vector<u32> lab(b);
        for (int i = 0; i < b; ++i) lab[i] = (i * 7) % k;
        for (int mse = 0; mse < 2; ++mse) {
            std::vector<float> dz(b * k); std::vector<double> rows(b);
            if (mse) launch(nn_mse_f32, G, B, (const float*)z.data(), (const u32*)lab.data(), b, k, dz.data(), rows.data());
            else launch(nn_ce_f32, G, B, (const float*)z.data(), (const u32*)lab.data(), b, k, dz.data(), rows.data());
            std::vector<double> rr(b), rdz(b * k);
            for (int i = 0; i < b; ++i) {
                double m = -INFINITY, s = 0;
                for (int j = 0; j < k; ++j) m = std::max(m, (double)z[i * k + j]);
                for (int j = 0; j < k; ++j) s += std::exp(z[i * k + j] - m);
                double lse = m + std::log(s);
                rr[i] = 0;
                for (int j = 0; j < k; ++j) {
                    double t = j == (int)lab[i];
                    if (mse) { double r = z[i * k + j] - t; rr[i] += r * r; rdz[i * k + j] = 2 * r / (b * k); }
                    else rdz[i * k + j] = (std::exp(z[i * k + j] - lse) - t) / b;
                }
                if (!mse) rr[i] = lse - z[i * k + lab[i]];
            }
            char bf[64];
            snprintf(bf, sizeof bf, "%s K=%d loss rows", mse ? "mse" : "ce", k); check(bf, rows, rr, 1e-12);
            snprintf(bf, sizeof bf, "%s K=%d dz", mse ? "mse" : "ce", k); check(bf, D(dz), rdz, 1e-6);
        }
    }
    // ---- optimizers (two steps)
    {
        int n = 200;
        auto w = rnd(n), g = rnd(n); auto w0 = w;
        std::vector<float> buf(n), m(n), v(n);
        for (int t = 1; t <= 2; ++t) launch(nn_sgd_f32, G, B, w.data(), (const float*)g.data(), buf.data(), (long long)n, 0.1f, 5e-4f, 0.9f, t == 1 ? 1 : 0);
        std::vector<double> rw(n);
        for (int i = 0; i < n; ++i) { double ww = w0[i], mb = 0; for (int t = 1; t <= 2; ++t) { double d = g[i] + 5e-4 * ww; mb = t == 1 ? d : 0.9 * mb + d; ww -= 0.1 * mb; } rw[i] = ww; }
        check("sgd two steps", D(w), rw, 1e-6);
        auto wa = w0;
        for (int t = 1; t <= 2; ++t) {
            double bc1 = 1 - std::pow(0.9, t), bc2 = std::sqrt(1 - std::pow(0.999, t));
            launch(nn_adam_f32, G, B, wa.data(), (const float*)g.data(), m.data(), v.data(), (long long)n, (float)(1e-3 / bc1), (float)bc2, 0.9f, 0.999f, 1e-8f, 5e-4f);
        }
        std::vector<double> ra(n);
        for (int i = 0; i < n; ++i) { double ww = w0[i], mm = 0, vv = 0; for (int t = 1; t <= 2; ++t) { double d = g[i] + 5e-4 * ww; mm = 0.9 * mm + 0.1 * d; vv = 0.999 * vv + 0.001 * d * d; ww -= 1e-3 / (1 - std::pow(0.9, t)) * mm / (std::sqrt(vv) / std::sqrt(1 - std::pow(0.999, t)) + 1e-8); } ra[i] = ww; }
        check("adam two steps", D(wa), ra, 1e-5);
    }
    printf("%s: %d failure(s)\n", fails ? "FAILED" : "all passed", fails);
    return fails != 0;
}
