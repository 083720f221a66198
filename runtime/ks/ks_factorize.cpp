#include "runtime/ks/ks_factorize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>

#include <eigen3/Eigen/Dense>

#include "ops/ref/quant.h"
#include "runtime/ks/ks_chain.h"
#include "runtime/ks/ks_model.h"
#include "runtime/ks/ks_rewrite.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace kestrel {

namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

const char* const kAllProjs[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

// Index helpers for a pattern (a, b, c, d): block (i, j), output k, input l.
struct Pat {
  int64_t a, b, c, d;
  explicit Pat(const KsMatmulParams& p) : a(p.a), b(p.b), c(p.c), d(p.d) {}
  int64_t out_feat(int64_t i, int64_t j, int64_t k) const { return (i * b + k) * d + j; }
  int64_t in_feat(int64_t i, int64_t j, int64_t l) const { return (i * c + l) * d + j; }
  size_t widx(int64_t i, int64_t j, int64_t l, int64_t k) const { return (size_t)(((i * d + j) * c + l) * b + k); }
};

void ridge(Mat& g) {
  const double mean = g.diagonal().mean();
  g.diagonal().array() += 1e-6 * (mean > 0 ? mean : 1.0);
}

// F_1 given F_0; returns ||W - F_1 F_0||^2. The large products run in float (Eigen's
// GEMM), the small normal systems in double.
double solve_f1(const RowMatF& W, const Pat& p0, const std::vector<float>& f0, const Pat& p1, std::vector<float>& f1) {
  const int64_t n_in = W.cols();
  double err2 = 0;
  MatF P(p1.c, n_in), Wr(p1.b, n_in);
  for (int64_t i1 = 0; i1 < p1.a; ++i1)
    for (int64_t j1 = 0; j1 < p1.d; ++j1) {
      // P: the F_0 rows (intermediate features) this block reads, dense over the inputs.
      P.setZero();
      for (int64_t l = 0; l < p1.c; ++l) {
        const int64_t s = p1.in_feat(i1, j1, l);
        const int64_t i0 = s / (p0.b * p0.d), k0 = (s % (p0.b * p0.d)) / p0.d, j0 = s % p0.d;
        for (int64_t l0 = 0; l0 < p0.c; ++l0) P(l, p0.in_feat(i0, j0, l0)) = f0[p0.widx(i0, j0, l0, k0)];
      }
      for (int64_t k = 0; k < p1.b; ++k) Wr.row(k) = W.row(p1.out_feat(i1, j1, k));
      Mat G = (P * P.transpose()).cast<double>();
      ridge(G);
      const MatF X = G.ldlt().solve((P * Wr.transpose()).cast<double>()).cast<float>();  // c1 x b1: X(l, k) = F_1[k, l]
      for (int64_t l = 0; l < p1.c; ++l)
        for (int64_t k = 0; k < p1.b; ++k) f1[p1.widx(i1, j1, l, k)] = X(l, k);
      Wr.noalias() -= X.transpose() * P;
      err2 += Wr.cast<double>().squaredNorm();
    }
  return err2;
}

// F_0 given F_1.
void solve_f0(const RowMatF& W, const Pat& p0, std::vector<float>& f0, const Pat& p1, const std::vector<float>& f1) {
  const int64_t n_out = W.rows();
  MatF Q(n_out, p0.b), Wc(n_out, p0.c);
  for (int64_t i0 = 0; i0 < p0.a; ++i0)
    for (int64_t j0 = 0; j0 < p0.d; ++j0) {
      // Q: the F_1 columns (intermediate features) this block writes, dense over the outputs.
      Q.setZero();
      for (int64_t k = 0; k < p0.b; ++k) {
        const int64_t t = p0.out_feat(i0, j0, k);
        const int64_t i1 = t / (p1.c * p1.d), l1 = (t % (p1.c * p1.d)) / p1.d, j1 = t % p1.d;
        for (int64_t k1 = 0; k1 < p1.b; ++k1) Q(p1.out_feat(i1, j1, k1), k) = f1[p1.widx(i1, j1, l1, k1)];
      }
      for (int64_t l = 0; l < p0.c; ++l) Wc.col(l) = W.col(p0.in_feat(i0, j0, l));
      Mat G = (Q.transpose() * Q).cast<double>();
      ridge(G);
      const Mat Y = G.ldlt().solve((Q.transpose() * Wc).cast<double>());  // b0 x c0: Y(k, l) = F_0[k, l]
      for (int64_t k = 0; k < p0.b; ++k)
        for (int64_t l = 0; l < p0.c; ++l) f0[p0.widx(i0, j0, l, k)] = (float)Y(k, l);
    }
}

std::string chain_text(const std::vector<KsMatmulParams>& ps) {
  std::string s;
  for (const KsMatmulParams& p : ps)
    s += (s.empty() ? "" : ":") + std::to_string(p.a) + "," + std::to_string(p.b) + "," + std::to_string(p.c) + "," +
         std::to_string(p.d);
  return s;
}

}  // namespace

Expected<std::vector<KsMatmulParams>> ks_monarch_chain(int64_t n_in, int64_t n_out, int blocks) {
  if (blocks < 1 || n_in % blocks || n_out % blocks || n_in / blocks > (1 << 20) || n_out / blocks > (1 << 20))
    return Status::invalid_argument("%d blocks do not divide a %lld -> %lld layer", blocks, (long long)n_in,
                                    (long long)n_out);
  // The intermediate width is the smaller of the two, so a narrowing or widening layer
  // (attn_k 2048 -> 256, ffn_down 5632 -> 2048) does not carry a square factor of its
  // larger side.
  const int64_t m = std::min(n_in, n_out);
  const int32_t nb = blocks, ci = (int32_t)(n_in / blocks), cm = (int32_t)(m / blocks), co = (int32_t)(n_out / blocks);
  return std::vector<KsMatmulParams>{{nb, cm, ci, 1}, {1, co, cm, nb}};
}

Expected<std::vector<KsMatmulParams>> ks_parse_chain(const std::string& text) {
  std::vector<KsMatmulParams> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(':', pos), text.size());
    const std::string part = text.substr(pos, end - pos);
    int32_t v[4];
    size_t q = 0;
    for (int n = 0; n < 4; ++n) {
      const char* s = part.c_str() + q;
      char* e = nullptr;
      const long x = std::strtol(s, &e, 10);
      if (e == s || x < 1 || x > (1 << 20) || (n < 3 && *e != ',') || (n == 3 && *e != '\0'))
        return Status::invalid_argument("bad KS chain '%s': want a,b,c,d[:a,b,c,d...] with values 1 to 2^20",
                                        text.c_str());
      v[n] = (int32_t)x;
      q = (size_t)(e - part.c_str()) + 1;
    }
    out.push_back({v[0], v[1], v[2], v[3]});
    if (out.size() > (size_t)kKsMaxFactors) return Status::invalid_argument("bad KS chain '%s': too many factors", text.c_str());
    pos = end + 1;
  }
  return out;
}

Expected<double> ks_fit(const float* W, int64_t n_in, int64_t n_out, const std::vector<KsMatmulParams>& pats,
                        int iters, uint64_t seed, std::vector<std::vector<float>>* factors) {
  KESTREL_TRY(ks_check_chain(pats.data(), (int)pats.size(), n_in, n_out, "ks fit"));
  if (pats.size() > 2) return Status::unsupported("ks fit: chains of 1 or 2 factors (got %zu)", pats.size());
  const Eigen::Map<const RowMatF> Wm(W, n_out, n_in);
  const RowMatF Wr = Wm;
  const double norm2 = Wr.cast<double>().squaredNorm();
  factors->assign(pats.size(), {});
  for (size_t t = 0; t < pats.size(); ++t)
    (*factors)[t].assign((size_t)pats[t].a * pats[t].b * pats[t].c * pats[t].d, 0.0f);
  double err2 = 0;
  if (pats.size() == 1) {
    // The projection: W's entries on the support; the error is the mass off it.
    const Pat p(pats[0]);
    double on = 0;
    for (int64_t i = 0; i < p.a; ++i)
      for (int64_t j = 0; j < p.d; ++j)
        for (int64_t l = 0; l < p.c; ++l)
          for (int64_t k = 0; k < p.b; ++k) {
            const float v = Wr(p.out_feat(i, j, k), p.in_feat(i, j, l));
            (*factors)[0][p.widx(i, j, l, k)] = v;
            on += (double)v * v;
          }
    err2 = std::max(0.0, norm2 - on);
  } else {
    const Pat p0(pats[0]), p1(pats[1]);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt((float)p0.c));
    for (float& v : (*factors)[0]) v = nd(rng);
    err2 = solve_f1(Wr, p0, (*factors)[0], p1, (*factors)[1]);
    for (int it = 0; it < iters; ++it) {
      solve_f0(Wr, p0, (*factors)[0], p1, (*factors)[1]);
      err2 = solve_f1(Wr, p0, (*factors)[0], p1, (*factors)[1]);
    }
  }
  return norm2 > 0 ? std::sqrt(err2 / norm2) : std::sqrt(err2);
}

Status ks_factorize_file(const std::string& in, const std::string& out, const KsFactorizeOptions& o,
                         std::vector<KsLayerReport>* report, const std::function<void(const KsLayerReport&)>& on_layer) {
  for (const auto& [proj, chain] : o.chains) {
    if (std::find(std::begin(kAllProjs), std::end(kAllProjs), proj) == std::end(kAllProjs))
      return Status::invalid_argument("unknown projection '%s'", proj.c_str());
    if (chain.empty()) return Status::invalid_argument("empty chain for '%s'", proj.c_str());
  }
  for (const std::string& proj : o.projs)
    if (std::find(std::begin(kAllProjs), std::end(kAllProjs), proj) == std::end(kAllProjs))
      return Status::invalid_argument("unknown projection '%s'", proj.c_str());
  if (o.iters < 0 || o.iters > 1000) return Status::invalid_argument("iters must be in [0, 1000]");
  KESTREL_TRY_ASSIGN(auto file, gguf::File::open(in));
  const std::set<int> layers(o.layers.begin(), o.layers.end());
  std::vector<std::string> projs = o.projs;
  if (projs.empty()) projs.assign(std::begin(kAllProjs), std::end(kAllProjs));
  std::vector<KsProjFactors> repl;
  for (const gguf::TensorInfo& t : file->tensors()) {
    // blk.<N>.<proj>.weight
    if (t.name.rfind("blk.", 0) != 0) continue;
    const size_t dot = t.name.find('.', 4);
    if (dot == std::string::npos) continue;
    char* e = nullptr;
    const long il = std::strtol(t.name.c_str() + 4, &e, 10);
    if (e != t.name.c_str() + dot || il < 0 || il > (1 << 20)) continue;
    const std::string rest = t.name.substr(dot + 1);
    if (rest.size() < 8 || rest.compare(rest.size() - 7, 7, ".weight") != 0) continue;
    const std::string proj = rest.substr(0, rest.size() - 7);
    if (std::find(projs.begin(), projs.end(), proj) == projs.end()) continue;
    if (!layers.empty() && !layers.count((int)il)) continue;
    if (t.n_dims != 2) return Status::bad_file("tensor '%s' is not 2-D", t.name.c_str());
    const int64_t n_in = t.ne[0], n_out = t.ne[1];
    std::vector<KsMatmulParams> chain;
    if (auto it = o.chains.find(proj); it != o.chains.end()) chain = it->second;
    else if (o.monarch_blocks > 0) {
      KESTREL_TRY_ASSIGN(chain, ks_monarch_chain(n_in, n_out, o.monarch_blocks));
    } else {
      return Status::invalid_argument("no chain for '%s': give --pattern %s=... or monarchN", t.name.c_str(),
                                      proj.c_str());
    }
    const auto t0 = std::chrono::steady_clock::now();
    // Dequantized (or widened) for the fit.
    std::vector<float> w;
    const uint64_t n = (uint64_t)n_in * (uint64_t)n_out;
    if (n > (uint64_t)1 << 32) return Status::unsupported("tensor '%s' is too large to fit", t.name.c_str());
    w.resize((size_t)n);
    const size_t row_bytes = dtype_row_size(t.type, n_in);
    for (int64_t r = 0; r < n_out; ++r)
      ref::dequantize_row(t.type, static_cast<const uint8_t*>(t.data) + (size_t)r * row_bytes, w.data() + (size_t)(r * n_in),
                          n_in);
    KsProjFactors pf{(int)il, proj, chain, {}};
    KESTREL_TRY_ASSIGN(const double err, ks_fit(w.data(), n_in, n_out, chain, o.iters, o.seed + repl.size(), &pf.factors));
    KsLayerReport r;
    r.tensor = t.name;
    r.chain = chain_text(chain);
    r.dense_params = n;
    for (const auto& f : pf.factors) r.ks_params += f.size();
    r.rel_error = err;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_layer) on_layer(r);
    if (report) report->push_back(r);
    repl.push_back(std::move(pf));
  }
  if (repl.empty()) return Status::invalid_argument("no tensor matches the chosen layers and projections");
  gguf::Writer wr;
  wr.set_alignment(file->alignment());
  KESTREL_TRY(ks_rewrite_gguf(*file, repl, o.type, KsWrite::factors, wr));
  return wr.write_file(out);
}

}  // namespace kestrel
