// CPU kernels: rope family (see isa_body.inl for how this is compiled per ISA).
//
// rope: threads take fixed chunks of the (token, head) rows. Each thread keeps
// the cos/sin table of its current token (n_dims/2 pairs) and rebuilds it when
// the token changes: angles pos * freq_scale * base^(-2i/n_dims) in double
// (a float angle is off by ~pos * 6e-8 rad; the optional freq factors divide
// each pair's inverse frequency there), times attn_factor, then rounded to float. The rotation
// is float: neox pairs (x[i], x[i+n_dims/2]) with SIMD, adjacent pairs
// (x[2i], x[2i+1]) as a plain loop the compiler vectorizes.
// Measured max abs error vs ops/ref 2.4e-7 for |x| <= 2, positions up to ~4000.
// In place allowed.
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace rope_k {

inline bool k_rope(const OpCall& c, Exec& exec) {
  const RopeParams& p = c.p<RopeParams>();
  const Tensor& x = *c.src[0];
  const int32_t* pos = static_cast<const int32_t*>(c.src[1]->data);
  const float* ff = c.n_src > 2 ? c.src[2]->row<const float>(0) : nullptr;
  const Tensor& d = *c.dst;
  const int64_t head_dim = x.ne[0], n_head = x.ne[1], n_tokens = x.ne[2];
  const int64_t half = p.n_dims / 2;
  // Scratch: inv_freq[half] doubles, then per thread cos[half] and sin[half]
  // floats, each slot padded to 64 bytes.
  const size_t freq_bytes = ((size_t)half * sizeof(double) + 63) & ~(size_t)63;
  const size_t slot_bytes = ((size_t)half * 2 * sizeof(float) + 63) & ~(size_t)63;
  char* scratch = static_cast<char*>(exec.scratch(freq_bytes + slot_bytes * (size_t)exec.n_threads()));
  if (!scratch) return false;
  double* inv_freq = reinterpret_cast<double*>(scratch);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = (double)p.freq_scale * std::pow((double)p.theta_base, -2.0 * (double)i / p.n_dims) /
                  (ff ? (double)ff[i] : 1.0);
  const double mscale = p.attn_factor;

  ew::par_rows(exec, n_head * n_tokens, head_dim, [&](int ith, int64_t r0, int64_t r1) {
    float* cs = reinterpret_cast<float*>(scratch + freq_bytes + slot_bytes * (size_t)ith);
    float* sn = cs + half;
    int64_t cur_t = -1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = r / n_head, h = r % n_head;
      if (t != cur_t) {
        cur_t = t;
        for (int64_t i = 0; i < half; ++i) {
          const double theta = (double)pos[t] * inv_freq[i];
          cs[i] = (float)(std::cos(theta) * mscale);
          sn[i] = (float)(std::sin(theta) * mscale);
        }
      }
      const float* in = x.row<float>(h, t);
      float* out = d.row<float>(h, t);
      if (p.mode == RopeMode::neox) {
        int64_t i = 0;
        for (; i + kLanes <= half; i += kLanes) {
          const fvec x0 = fvec::load_unaligned(in + i), x1 = fvec::load_unaligned(in + half + i);
          const fvec cv = fvec::load_unaligned(cs + i), sv = fvec::load_unaligned(sn + i);
          xsimd::fms(x0, cv, x1 * sv).store_unaligned(out + i);
          xsimd::fma(x0, sv, x1 * cv).store_unaligned(out + half + i);
        }
        for (; i < half; ++i) {
          const float x0 = in[i], x1 = in[half + i];
          out[i] = x0 * cs[i] - x1 * sn[i];
          out[half + i] = x0 * sn[i] + x1 * cs[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = in[2 * i], x1 = in[2 * i + 1];
          out[2 * i] = x0 * cs[i] - x1 * sn[i];
          out[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
        }
      }
      if (out != in)
        for (int64_t i = p.n_dims; i < head_dim; ++i) out[i] = in[i];
    }
  });
  return true;
}

}  // namespace rope_k

inline void register_rope(KernelTable& table) { table[OpId::rope].run = &rope_k::k_rope; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
