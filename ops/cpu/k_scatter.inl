// CPU kernels: set_rows (the KV store's scatter), fill, softcap and transpose (see
// isa_body.inl for how this is compiled per ISA).
//
// set_rows: rows split over threads in fixed chunks, each converted by the
// copy kernel's copy_row (F32 -> F16 rounds to nearest even, bit-identical to
// ops/ref). Two rows naming the same destination: the op says the last wins,
// so a batch with repeated ids runs on one thread in order.
// softcap: cap * tanh(x / cap) with xsimd::tanh; measured max abs error vs the
// double reference 2.4e-7 * cap over x in [-50 cap, 50 cap] (a few ulp).
namespace kestrel::cpu::KESTREL_ISA_NS {
namespace scatter {

inline int32_t id_at(const Tensor& ids, int64_t m) {
  int32_t id;
  std::memcpy(&id, static_cast<const char*>(ids.data) + m * ids.nb[0], sizeof(id));
  return id;
}

inline bool k_set_rows(const OpCall& c, Exec& e) {
  const Tensor& x = *c.src[0];
  const Tensor& ids = *c.src[1];
  const Tensor& d = *c.dst;
  const int64_t M = x.ne[1], R = d.ne[1];
  // Strictly increasing ids (a KV store's cells) cannot collide: rows go to the
  // threads. Otherwise the op's "last wins" needs one thread in order.
  bool unique = true;
  int32_t prev = -1;
  for (int64_t m = 0; m < M && unique; ++m) {
    const int32_t id = id_at(ids, m);
    if (id < 0 || id >= R) continue;
    unique = id > prev;
    prev = id;
  }
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0; m < r1; ++m) {
      const int32_t id = id_at(ids, m);
      if (id < 0 || id >= R) continue;
      ew::copy_row(DType::F32, x.row<const char>(m), d.type, d.row<char>(id), x.ne[0]);
    }
  };
  if (!unique) {
    rows(0, M);
    return true;
  }
  ew::par_rows(e, M, x.ne[0], [&](int64_t r0, int64_t r1) { rows(r0, r1); });
  return true;
}

inline bool k_fill(const OpCall& c, Exec& e) {
  const Tensor& d = *c.dst;
  const fvec v(c.p<FillParams>().value);
  const float vs = c.p<FillParams>().value;
  ew::par_rows(e, d.nrows(), d.ne[0], [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* out = ew::row_ptr<float>(d, ew::row_idx(d, r));
      int64_t i = 0;
      for (; i + kLanes <= d.ne[0]; i += kLanes) v.store_unaligned(out + i);
      for (; i < d.ne[0]; ++i) out[i] = vs;
    }
  });
  return true;
}

inline bool k_softcap(const OpCall& c, Exec& e) {
  const float cap = c.p<SoftcapParams>().cap;
  const fvec vc(cap), vinv(1.0f / cap);
  return ew::run_unary(c, e, [=](fvec x) { return vc * xsimd::tanh(x * vinv); });
}

// transpose in 16 x 16 tiles (both sides stay within a few cache lines per
// tile); threads take fixed ranges of destination rows.
inline bool k_transpose(const OpCall& c, Exec& e) {
  const Tensor& a = *c.src[0];
  const Tensor& d = *c.dst;
  constexpr int64_t kT = 16;
  const int64_t K = a.ne[0], M = a.ne[1];
  ew::par_rows(e, (K + kT - 1) / kT, kT * M, [&](int64_t t0, int64_t t1) {
    for (int64_t k0 = t0 * kT; k0 < t1 * kT && k0 < K; k0 += kT)
      for (int64_t m0 = 0; m0 < M; m0 += kT) {
        const int64_t k1 = std::min(K, k0 + kT), m1 = std::min(M, m0 + kT);
        for (int64_t m = m0; m < m1; ++m) {
          const float* in = a.row<const float>(m);
          for (int64_t k = k0; k < k1; ++k) d.row<float>(k)[m] = in[k];
        }
      }
  });
  return true;
}

}  // namespace scatter

inline void register_scatter(KernelTable& table) {
  table[OpId::set_rows].run = &scatter::k_set_rows;
  table[OpId::fill].run = &scatter::k_fill;
  table[OpId::softcap].run = &scatter::k_softcap;
  table[OpId::transpose].run = &scatter::k_transpose;
}

}  // namespace kestrel::cpu::KESTREL_ISA_NS
