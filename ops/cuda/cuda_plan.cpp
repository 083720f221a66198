// The device executable of a plan (see cuda_plan.h for the contract).
#include "ops/cuda/cuda_plan.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "ops/cuda/cuda_buffer.h"
#include "ops/cuda/cuda_kernels.h"
#include "ops/cuda/cuda_residency.h"
#include "ops/cuda/matvec.h"
#include "ops/cuda/rope_store.h"
#include "platform/cuda/cuda_status.h"

namespace kestrel::cuda {
namespace {

// A root of the plan and its device memory.
struct DeviceRoot {
  PlanRoot host;
  std::shared_ptr<Buffer> dev;  // nullptr when the root is device memory already
  char* base = nullptr;   // device address standing for host.base
  void* bound = nullptr;  // output roots: host memory from bind_output()
  bool used = false;      // some node reads or writes it
};

// A run of weight memory (outside every root) that nodes read and that the
// backend does not hold resident (Backend::make_resident): copied for the
// executable's life.
struct Weight {
  const char* lo = nullptr;
  size_t bytes = 0;
  std::unique_ptr<Buffer> dev;
  char* base = nullptr;  // device address standing for lo
};

// A get_rows whose ids are uploaded from an input root: checked on the host
// before the upload (out-of-range ids would read zeros on the device; the
// step reports them instead, as the ref backend does).
struct IdCheck {
  size_t node = 0;
  const char* ids = nullptr;  // host address
  size_t stride = 0;          // bytes between ids
  int64_t n = 0;
  int64_t n_rows = 0;         // table rows
};

class CudaExecutable final : public Executable {
 public:
  explicit CudaExecutable(Context& ctx) : ctx_(ctx) {}

  Status prepare(const Backend& backend, const Plan& plan) {
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    try {
      nodes_ = plan.nodes();
      calls_.resize(nodes_.size());
      roots_.resize(plan.roots().size());
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("cuda executable of %zu nodes", plan.nodes().size());
    }
    KESTREL_TRY(map_roots(plan));
    KESTREL_TRY(map_weights(plan));
    size_t scratch = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      PlanNode& n = nodes_[i];
      const Tensor host_ids = n.op == OpId::get_rows && n.n_src > 1 ? n.src[1] : Tensor{};
      KESTREL_TRY(rebase(plan, n.dst, i, true));
      for (int s = 0; s < n.n_src; ++s) KESTREL_TRY(rebase(plan, n.src[s], i, false));
      calls_[i] = n.call();
      Status v = validate_op(calls_[i]);
      if (!v.ok()) return std::move(v.with_context("plan node " + std::to_string(i) + ": "));
      if ((n.op == OpId::matmul || n.op == OpId::get_rows) && !weight_type_supported(calls_[i].src[0]->type))
        return Status::unsupported("plan node %zu (%s): the cuda backend has no kernel for %s weights, "
                                   "and a device plan has no host fallback",
                                   i, op_name(n.op), dtype_name(calls_[i].src[0]->type));
      if (!backend.supports(calls_[i]))
        return Status::unsupported("plan node %zu (%s): the cuda backend cannot run it (types, alignment or size), "
                                   "and a device plan has no host fallback",
                                   i, op_name(n.op));
      scratch = std::max(scratch, dispatch_scratch_bytes(calls_[i]));
      const int r = host_ids.data ? plan.root_of(host_ids.data) : -1;
      if (r >= 0 && plan.roots()[static_cast<size_t>(r)].role == SlotRole::input) {
        try {
          id_checks_.push_back({i, static_cast<const char*>(host_ids.data), host_ids.nb[0], host_ids.ne[0],
                                n.src[0].ne[1]});
        } catch (const std::bad_alloc&) {
          return Status::out_of_memory("cuda executable id checks");
        }
      }
    }
    try {
      node_kind_.assign(nodes_.size(), kPlain);
      group_n_.assign(nodes_.size(), 1);
      rope_of_.assign(nodes_.size(), kNone);
      norm_of_.assign(nodes_.size(), kNone);
      add_of_.assign(nodes_.size(), kNone);
      x_records_.assign(nodes_.size(), 0);
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("cuda executable node flags");
    }
    group_matvecs();
    fuse_matvec_adds();
    fuse_matvec_norms();
    fuse_attention_records();
    for (size_t i = 0; i + 1 < nodes_.size(); ++i)
      if (node_kind_[i] == kPlain && node_kind_[i + 1] == kPlain && add_then_norm(i)) {
        node_kind_[i] = kAddNorm;
        node_kind_[i + 1] = kFusedAway;
      }
    for (size_t i = 0; i + 3 < nodes_.size(); ++i)
      if (rope_store_at(i)) {
        node_kind_[i] = kRopeStore;
        node_kind_[i + 1] = node_kind_[i + 2] = node_kind_[i + 3] = kFusedAway;
        i += 3;
      }
    fuse_matvec_ropes();
    for (size_t i = 1; i < nodes_.size(); ++i) {
      const PlanNode& a = nodes_[i - 1];
      const PlanNode& b = nodes_[i];
      if (a.op != OpId::matmul || b.op != OpId::matmul || !matmul_quantizes_x(calls_[i - 1]) ||
          !matmul_quantizes_x(calls_[i]))
        continue;
      const Tensor &xa = a.src[1], &xb = b.src[1];
      bool same = xa.data == xb.data && xa.type == xb.type;
      for (int d = 0; d < 4 && same; ++d) same = xa.ne[d] == xb.ne[d] && xa.nb[d] == xb.nb[d];
      // The previous node must not write the x it shares (y overlapping x).
      const char* ya = static_cast<const char*>(a.dst.data);
      const char* x0 = static_cast<const char*>(xb.data);
      if (same && !(ya < x0 + xb.nbytes() && x0 < ya + a.dst.nbytes()) && node_kind_[i] == kPlain)
        node_kind_[i] = kReuseQx;
    }
    // The step allocates nothing: the largest scratch any node asks for now.
    if (scratch) KESTREL_TRY(ctx_.get_scratch(scratch).status());
    return cuda_check(cudaStreamSynchronize(ctx_.stream), "prepare: uploads");
  }

  Status bind_output(int root, void* host) override {
    if (root < 0 || static_cast<size_t>(root) >= roots_.size() ||
        roots_[static_cast<size_t>(root)].host.role != SlotRole::output)
      return Status::invalid_argument("bind_output: root %d is not an output", root);
    if (!host) return Status::invalid_argument("bind_output: null memory");
    roots_[static_cast<size_t>(root)].bound = host;
    return {};
  }

  Status execute() override {
    for (const DeviceRoot& r : roots_)
      if (r.host.role == SlotRole::output && r.used && !r.bound)
        return Status::invalid_argument("execute: output root %s not bound", r.host.name);
    for (const IdCheck& c : id_checks_)
      for (int64_t m = 0; m < c.n; ++m) {
        int32_t id;
        std::memcpy(&id, c.ids + static_cast<size_t>(m) * c.stride, sizeof(id));
        if (id < 0 || id >= c.n_rows)
          return Status::invalid_argument("plan node %zu (get_rows): id %d at %lld outside [0, %lld)", c.node, id,
                                          static_cast<long long>(m), static_cast<long long>(c.n_rows));
      }
    KESTREL_TRY(cuda_check(cudaSetDevice(ctx_.device), "cudaSetDevice"));
    const cudaStream_t s = ctx_.stream;
    for (const DeviceRoot& r : roots_)
      if (r.host.role == SlotRole::input && r.host.bytes)
        KESTREL_TRY(drained(cudaMemcpyAsync(r.base, r.host.base, r.host.bytes, cudaMemcpyHostToDevice, s),
                            "execute: upload inputs"));
    // The second step on captures the node launches as a graph (the first
    // one runs eagerly: lazy initialisation such as kernel attributes happens
    // outside the capture); a plan whose capture fails stays eager.
    if (!graph_ && ctx_.graphs && n_steps_ > 0 && !graph_failed_) graph_failed_ = !capture().ok();
    if (graph_) {
      KESTREL_TRY(drained(cudaGraphLaunch(graph_, s), "execute: graph launch"));
    } else {
      KESTREL_TRY(launch_nodes());
    }
    ++n_steps_;
    for (const DeviceRoot& r : roots_)
      if (r.host.role == SlotRole::output && r.used && r.host.bytes)
        KESTREL_TRY(drained(cudaMemcpyAsync(r.bound, r.base, r.host.bytes, cudaMemcpyDeviceToHost, s),
                            "execute: download outputs"));
    return cuda_check(cudaStreamSynchronize(s), "execute: step");
  }

  const char* node_backend(size_t i) const override { return i < nodes_.size() ? "cuda" : ""; }
  size_t n_nodes() const override { return nodes_.size(); }
  size_t n_launches() const override {
    return static_cast<size_t>(std::count_if(node_kind_.begin(), node_kind_.end(),
                                             [](uint8_t k) { return k != kFusedAway; }));
  }
  bool replays_graph() const override { return graph_ != nullptr; }

  Status time_nodes(std::vector<double>& us) override {
    const cudaStream_t s = ctx_.stream;
    std::vector<cudaEvent_t> ev(calls_.size() + 1, nullptr);
    Status st;
    for (auto& e : ev)
      if (st.ok()) st = cuda_check(cudaEventCreate(&e), "cudaEventCreate");
    for (const DeviceRoot& r : roots_)
      if (st.ok() && r.host.role == SlotRole::input && r.host.bytes)
        st = cuda_check(cudaMemcpyAsync(r.base, r.host.base, r.host.bytes, cudaMemcpyHostToDevice, s), "upload inputs");
    if (st.ok()) st = cuda_check(cudaEventRecord(ev[0], s), "cudaEventRecord");
    for (size_t i = 0; i < calls_.size() && st.ok(); ++i) {
      st = launch_node(i);
      if (st.ok()) st = cuda_check(cudaEventRecord(ev[i + 1], s), "cudaEventRecord");
    }
    const cudaError_t sync = cudaStreamSynchronize(s);
    if (st.ok()) st = cuda_check(sync, "time_nodes");
    try {
      us.assign(calls_.size(), 0.0);
    } catch (const std::bad_alloc&) {
      st = Status::out_of_memory("node times");
    }
    for (size_t i = 0; i < calls_.size() && st.ok(); ++i) {
      float ms = 0;
      st = cuda_check(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]), "cudaEventElapsedTime");
      us[i] = ms * 1e3;
    }
    for (auto& e : ev)
      if (e) (void)cudaEventDestroy(e);
    return st;
  }

  ~CudaExecutable() override {
    if (graph_) (void)cudaGraphExecDestroy(graph_);
  }

 private:
  // Node i's launch: a matmul whose x the previous node (a matmul on the
  // same x) already quantized into the scratch skips that (q / k / v and
  // gate / up read one normed x).
  Status launch_node(size_t i) {
    if (node_kind_[i] == kFusedAway) return {};
    if (node_kind_[i] == kAddNorm) {
      // nodes i (add) and i + 1 (rms_norm of the sum) as one kernel.
      const OpCall& add = calls_[i];
      const OpCall& norm = calls_[i + 1];
      const RmsNormParams& p = norm.p<RmsNormParams>();
      const Tensor* w = norm.opt_src(1);
      return cuda_check(launch_add_rms_norm(view(*add.src[0]), view(*add.src[1]), view(*add.dst),
                                            w ? static_cast<const float*>(w->data) : nullptr, view(*norm.dst), p.eps,
                                            p.one_plus_weight, ctx_.stream),
                        "add + rms_norm");
    }
    if (node_kind_[i] == kAttnRecords) {
      // The attention (decode kernel) also writes its output as the 8-bit
      // records the matvec after it reads (x_records_[i + 1]).
      const OpCall& c = calls_[i];
      const AttentionParams& p = c.p<AttentionParams>();
      const Tensor* r = c.opt_src(3);
      KESTREL_TRY_ASSIGN(void* scratch, matvec_scratch(calls_[i + 1].src[0]->type, view(*calls_[i + 1].src[1])));
      return cuda_check(launch_attention_decode(c.src[1]->type, view(*c.src[0]), view(*c.src[1]), view(*c.src[2]),
                                                r ? view(*r) : TV{}, view(*c.dst), {p.scale, p.soft_cap, p.exp},
                                                ctx_.stream, scratch, ctx_.attn_ws),
                        "attention + records");
    }
    if (node_kind_[i] == kMatvecGroup) {
      MatvecSegs segs;
      for (size_t k = i; k < i + group_n_[i]; ++k) segs.add(view(*calls_[k].src[0]), view(*calls_[k].dst));
      MatvecNorm norm;
      const bool has_norm = norm_of_[i] != kNone;
      TV x = has_norm ? norm_prologue(norm_of_[i], &norm) : view(*calls_[i].src[1]);
      MatvecAdd add;
      if (add_of_[i] != kNone) {
        const OpCall& a = calls_[add_of_[i]];
        add.r = view(same_view(*a.src[0], *calls_[i].dst) ? *a.src[1] : *a.src[0]);
        add.s = view(*a.dst);
      }
      MatvecRope rope;
      if (rope_of_[i] != kNone) rope = rope_epilogue(rope_of_[i]);
      KESTREL_TRY_ASSIGN(void* scratch, matvec_scratch(calls_[i].src[0]->type, x));
      return cuda_check(launch_matvec(calls_[i].src[0]->type, segs, x, scratch, ctx_.stream, has_norm ? &norm : nullptr,
                                      add_of_[i] != kNone ? &add : nullptr, x_records_[i] != 0,
                                      rope_of_[i] != kNone ? &rope : nullptr),
                        "matvec group");
    }
    if (node_kind_[i] == kRopeStore) {
      // nodes i (rope q), i + 1 (rope k), i + 2 (K rows), i + 3 (V rows).
      const RopeArgs args = rope_args(i);
      const OpCall& ks = calls_[i + 2];
      const OpCall& vs = calls_[i + 3];
      return cuda_check(launch_rope_store(view(*calls_[i].dst), view(*calls_[i + 1].dst), view(*vs.src[0]),
                                          static_cast<const int32_t*>(calls_[i].src[1]->data),
                                          static_cast<const int32_t*>(ks.src[1]->data), ks.dst->type, view(*ks.dst),
                                          view(*vs.dst), args, ctx_.stream),
                        "rope + kv store");
    }
    if (node_kind_[i] == kGlu) {
      // nodes i (gate), i + 1 (up) and i + 2 (the gated activation) as one kernel.
      const OpCall& act = calls_[i + 2];
      Binary op = Binary::swiglu;
      ExpTier tier = ExpTier::exact;
      if (act.op == OpId::swiglu) {
        tier = act.p<SiluParams>().exp;
      } else {
        const GeluParams& gp = act.p<GeluParams>();
        tier = gp.exp;
        op = gp.form == GeluForm::erf ? Binary::geglu_erf
             : gp.form == GeluForm::sigmoid ? Binary::geglu_sigmoid
                                            : Binary::geglu_tanh;
      }
      MatvecNorm norm;
      const bool has_norm = norm_of_[i] != kNone;
      const TV x = has_norm ? norm_prologue(norm_of_[i], &norm) : view(*calls_[i].src[1]);
      KESTREL_TRY_ASSIGN(void* scratch, matvec_scratch(calls_[i].src[0]->type, x));
      return cuda_check(launch_matvec_glu(calls_[i].src[0]->type, view(*calls_[i].src[0]), view(*calls_[i + 1].src[0]),
                                          x, view(*act.dst), view(*calls_[i].dst), view(*calls_[i + 1].dst), op, tier,
                                          scratch, ctx_.stream, has_norm ? &norm : nullptr),
                        "matvec glu");
    }
    return node_kind_[i] == kReuseQx ? run_matmul_quantized_x(ctx_, calls_[i]) : dispatch(ctx_, calls_[i]);
  }

  RopeArgs rope_args(size_t i) const {
    const RopeParams& p = calls_[i].p<RopeParams>();
    return {p.mode == RopeMode::neox ? 1 : 0, p.n_dims, p.theta_base, p.freq_scale};
  }

  // The rope + store nodes j .. j + 3 (a kRopeStore run) as a q / k / v launch's epilogue.
  MatvecRope rope_epilogue(uint32_t j) const {
    MatvecRope r;
    r.pos = static_cast<const int32_t*>(calls_[j].src[1]->data);
    r.rows = static_cast<const int32_t*>(calls_[j + 2].src[1]->data);
    r.args = rope_args(j);
    r.kv_type = calls_[j + 2].dst->type;
    r.kc = view(*calls_[j + 2].dst);
    r.vc = view(*calls_[j + 3].dst);
    return r;
  }

  // The scratch a matvec launch on x quantizes x into (nullptr: none needed;
  // prepare() reserved the largest any node asks for).
  Expected<void*> matvec_scratch(DType wt, const TV& x) {
    const size_t bytes = matvec_scratch_bytes(wt, x);
    if (!bytes) return static_cast<void*>(nullptr);
    return ctx_.get_scratch(bytes);
  }

  // The rms_norm node k folded into the launch after it: its parameters, and
  // its input, which the launch reads as x.
  TV norm_prologue(uint32_t k, MatvecNorm* out) const {
    const OpCall& n = calls_[k];
    const RmsNormParams& p = n.p<RmsNormParams>();
    const Tensor* w = n.opt_src(1);
    out->w = w ? static_cast<const float*>(w->data) : nullptr;
    out->eps = p.eps;
    out->one_plus_weight = p.one_plus_weight;
    out->y = view(*n.dst);
    return view(*n.src[0]);
  }

  // Every tensor node i reads or writes: weights, x, outputs (a group's or a
  // GLU's members too).
  template <typename F>
  void each_tensor_of_launch(size_t i, F&& f) const {
    const size_t last = node_kind_[i] == kGlu ? i + 2 : i + group_n_[i] - 1;
    for (size_t k = i; k <= last; ++k) {
      f(nodes_[k].dst);
      for (int s = 0; s < nodes_[k].n_src; ++s) f(nodes_[k].src[s]);
    }
  }

  static bool f32_rows(const Tensor& t) { return t.type == DType::F32 && t.nb[0] == 4; }

  // A single warp-per-row matmul (i) whose output the next node adds to
  // another tensor of its shape: the add runs in the matvec's epilogue, each
  // output element by the lane that computed it (o-proj and down into the
  // residual stream). The sum may be the other input in place, nothing the
  // launch reads.
  void fuse_matvec_adds() {
    for (size_t i = 0; i + 1 < nodes_.size(); ++i) {
      const bool single = (node_kind_[i] == kPlain && nodes_[i].op == OpId::matmul && matmul_uses_matvec(calls_[i])) ||
                          (node_kind_[i] == kMatvecGroup && group_n_[i] == 1);
      if (!single || node_kind_[i + 1] != kPlain || nodes_[i + 1].op != OpId::add) continue;
      const PlanNode& mm = nodes_[i];
      const PlanNode& a = nodes_[i + 1];
      const Tensor& m = mm.dst;
      const bool first = same_view(a.src[0], m), second = same_view(a.src[1], m);
      if (first == second) continue;
      const Tensor& r = first ? a.src[1] : a.src[0];
      const Tensor& sum = a.dst;
      if (!f32_rows(m) || !f32_rows(r) || !f32_rows(sum)) continue;
      bool shapes = true;
      for (int d = 0; d < 4; ++d) shapes = shapes && r.ne[d] == m.ne[d] && sum.ne[d] == m.ne[d];
      if (!shapes || overlaps(r, m) || overlaps(sum, mm.src[0]) || overlaps(sum, mm.src[1]) ||
          overlaps(r, mm.src[1]))
        continue;
      if (overlaps(sum, m) && !same_view(sum, m)) continue;
      if (overlaps(sum, r) && !same_view(sum, r)) continue;
      node_kind_[i] = kMatvecGroup;
      group_n_[i] = 1;
      add_of_[i] = static_cast<uint32_t>(i + 1);
      node_kind_[i + 1] = kFusedAway;
    }
  }

  // An rms_norm of one row whose output is exactly the x of the matvec
  // launch after it (q / k / v, gate / up, the output head): every block of
  // that launch normalises its staged copy of the norm's input, block 0
  // writes the norm's output for any later reader. The input may not be
  // written by the launch, nor the norm's output read by it.
  void fuse_matvec_norms() {
    for (size_t i = 0; i + 1 < nodes_.size(); ++i) {
      const size_t j = i + 1;
      if (node_kind_[i] != kPlain || nodes_[i].op != OpId::rms_norm) continue;
      const bool single = node_kind_[j] == kPlain && nodes_[j].op == OpId::matmul && matmul_uses_matvec(calls_[j]);
      if (!single && node_kind_[j] != kMatvecGroup && node_kind_[j] != kGlu) continue;
      const PlanNode& n = nodes_[i];
      const Tensor &src = n.src[0], &y = n.dst;
      if (!same_view(nodes_[j].src[1], y) || !f32_rows(src) || !f32_rows(y) || overlaps(src, y) ||
          reinterpret_cast<uintptr_t>(src.data) % 16)  // read as float4
        continue;
      if (n.n_src > 1 && (n.src[1].type != DType::F32 || n.src[1].nb[0] != 4)) continue;
      if (src.ne[1] * src.ne[2] * src.ne[3] != 1 || !matvec_can_norm(nodes_[j].src[0].type, view(src))) continue;
      if (single) group_n_[j] = 1;
      const uint8_t kind = node_kind_[j];
      if (single) node_kind_[j] = kMatvecGroup;
      bool clash = false;
      each_tensor_of_launch(j, [&](const Tensor& t) {
        if (t.data == y.data && same_view(t, y)) return;  // the x the launch no longer reads
        if (overlaps(t, src) || overlaps(t, y)) clash = true;
      });
      if (add_of_[j] != kNone) {
        const Tensor& s = nodes_[add_of_[j]].dst;
        clash = clash || overlaps(s, src) || overlaps(s, y);
      }
      if (clash) {
        node_kind_[j] = kind;
        continue;
      }
      norm_of_[j] = static_cast<uint32_t>(i);
      node_kind_[i] = kFusedAway;
    }
  }

  // An attention of one query on the decode kernel whose output is exactly
  // the x of the matvec launch after it: the attention writes x's 8-bit
  // records too, and that launch runs no quantize kernel.
  void fuse_attention_records() {
    for (size_t i = 0; i + 1 < nodes_.size(); ++i) {
      const size_t j = i + 1;
      if (node_kind_[i] != kPlain || nodes_[i].op != OpId::attention) continue;
      if (node_kind_[j] != kMatvecGroup || norm_of_[j] != kNone) continue;
      const OpCall& c = calls_[i];
      const Tensor &q = *c.src[0], &k = *c.src[1], &v = *c.src[2], &y = *c.dst;
      const Tensor* r = c.opt_src(3);
      if (r && r->type != DType::I32) continue;  // an F32 mask: not the decode kernel
      const Tensor& x = nodes_[j].src[1];
      const int64_t D = q.ne[0];
      if (q.ne[2] != 1 || q.ne[3] != 1 || D % 32 || y.type != DType::F32 || y.ne[0] != D ||
          y.nb[1] != static_cast<size_t>(D) * 4 || y.ne[2] * y.ne[3] != 1)
        continue;
      if (x.data != y.data || !f32_rows(x) || x.nbytes() != y.nbytes() || x.ne[1] * x.ne[2] * x.ne[3] != 1 ||
          !matvec_scratch_bytes(nodes_[j].src[0].type, view(x)))
        continue;
      if (attention_uses_tiled(D, q.ne[1], k.ne[1], q.ne[2], false) ||
          !attention_decode_fits(k.type, view(q), view(k), view(v), false))
        continue;
      node_kind_[i] = kAttnRecords;
      x_records_[j] = 1;
    }
  }

  static bool overlaps(const Tensor& a, const Tensor& b) {
    const char* pa = static_cast<const char*>(a.data);
    const char* pb = static_cast<const char*>(b.data);
    return pa < pb + b.nbytes() && pb < pa + a.nbytes();
  }

  static bool same_view(const Tensor& a, const Tensor& b) {
    if (a.data != b.data || a.type != b.type) return false;
    for (int d = 0; d < 4; ++d)
      if (a.ne[d] != b.ne[d] || a.nb[d] != b.nb[d]) return false;
    return true;
  }

  // Node j may run in one matvec launch with node i: both matmuls on the
  // warp-per-row path over the same x with the same weight type, and node
  // j's output touches neither x nor the outputs of nodes i .. j - 1.
  bool matvec_joins(size_t i, size_t j) const {
    const PlanNode& a = nodes_[i];
    const PlanNode& b = nodes_[j];
    if (b.op != OpId::matmul || node_kind_[j] != kPlain || !matmul_uses_matvec(calls_[j])) return false;
    if (!same_view(a.src[1], b.src[1]) || a.src[0].type != b.src[0].type || overlaps(b.dst, b.src[1])) return false;
    for (size_t k = i; k < j; ++k)
      if (overlaps(nodes_[k].dst, b.dst)) return false;
    return true;
  }

  // gate (i), up (i + 1), then swiglu / geglu (i + 2) of exactly their outputs.
  bool glu_at(size_t i) const {
    if (i + 2 >= nodes_.size() || !matvec_joins(i, i + 1)) return false;
    const PlanNode& g = nodes_[i];
    const PlanNode& u = nodes_[i + 1];
    const PlanNode& act = nodes_[i + 2];
    if ((act.op != OpId::swiglu && act.op != OpId::geglu) || node_kind_[i + 2] != kPlain) return false;
    if (g.src[0].ne[0] != u.src[0].ne[0] || g.src[0].ne[1] != u.src[0].ne[1]) return false;
    if (!same_view(act.src[0], g.dst) || !same_view(act.src[1], u.dst) || act.dst.type != DType::F32) return false;
    for (int d = 0; d < 4; ++d)
      if (act.dst.ne[d] != g.dst.ne[d]) return false;
    // The fused kernel writes gate, up, then the activation, row element by
    // row element: the activation may be either input in place, nothing else.
    if (overlaps(act.dst, g.src[1])) return false;
    if (overlaps(act.dst, g.dst) && !same_view(act.dst, g.dst)) return false;
    if (overlaps(act.dst, u.dst) && !same_view(act.dst, u.dst)) return false;
    return true;
  }

  // rope(q), rope(k) in place with one pos and one rotation, then the K rows
  // (k's memory, its heads contiguous per token) and the V rows into cache
  // cells of one type by the same row ids (launch_rope_store's contract).
  bool rope_store_at(size_t i) const {
    const PlanNode& rq = nodes_[i];
    const PlanNode& rk = nodes_[i + 1];
    const PlanNode& sk = nodes_[i + 2];
    const PlanNode& sv = nodes_[i + 3];
    for (size_t j = i; j < i + 4; ++j)
      if (node_kind_[j] != kPlain) return false;
    if (rq.op != OpId::rope || rk.op != OpId::rope || sk.op != OpId::set_rows || sv.op != OpId::set_rows) return false;
    if (!same_view(rq.src[0], rq.dst) || !same_view(rk.src[0], rk.dst) || rq.dst.type != DType::F32 ||
        rk.dst.type != DType::F32 || rq.src[1].data != rk.src[1].data)
      return false;
    const RopeParams& pq = calls_[i].p<RopeParams>();
    const RopeParams& pk = calls_[i + 1].p<RopeParams>();
    if (pq.mode != pk.mode || pq.n_dims != pk.n_dims || pq.theta_base != pk.theta_base ||
        pq.freq_scale != pk.freq_scale || pq.n_dims / 2 > kRopeStoreMaxPairs)
      return false;
    const Tensor &q = rq.dst, &k = rk.dst;
    const int64_t D = q.ne[0], M = q.ne[2];
    if (k.ne[0] != D || k.ne[2] != M || q.ne[3] != 1 || k.ne[3] != 1 || q.nb[0] != 4 || k.nb[0] != 4) return false;
    // k's heads contiguous per token: its memory is the K rows sk stores.
    const Tensor& kr = sk.src[0];
    if (kr.data != k.data || kr.type != DType::F32 || k.nb[1] != static_cast<size_t>(D) * 4 ||
        kr.ne[0] != D * k.ne[1] || kr.ne[1] != M || kr.nb[0] != 4 || kr.nb[1] != k.nb[2] || kr.ne[2] * kr.ne[3] != 1)
      return false;
    const Tensor& vr = sv.src[0];
    if (vr.type != DType::F32 || vr.ne[0] != kr.ne[0] || vr.ne[1] != M || vr.nb[0] != 4 || vr.ne[2] * vr.ne[3] != 1)
      return false;
    if (sk.src[1].data != sv.src[1].data || sk.src[1].ne[0] != M) return false;
    const Tensor &kc = sk.dst, &vc = sv.dst;
    if (kc.type != vc.type || (kc.type != DType::F32 && kc.type != DType::F16 && kc.type != DType::BF16) ||
        kc.ne[0] != kr.ne[0] || vc.ne[0] != kr.ne[0] || kc.ne[1] != vc.ne[1])
      return false;
    const size_t el = kc.type == DType::F32 ? 4 : 2;
    if (kc.nb[0] != el || vc.nb[0] != el) return false;
    // Distinct memory: the four nodes' reads and writes meet only where they
    // are the same tensor.
    if (overlaps(q, k) || overlaps(q, vr) || overlaps(k, vr) || overlaps(kc, vc))
      return false;
    for (const Tensor* c : {&kc, &vc})
      if (overlaps(*c, q) || overlaps(*c, k) || overlaps(*c, vr)) return false;
    return true;
  }

  // A q / k / v launch of one token right before a rope + K / V store run
  // (kRopeStore) whose q, k and v are exactly the launch's three outputs and
  // whose rope covers whole heads: the launch rotates and stores them
  // (KESTREL_CUDA_QKV_ROPE=0 at prepare keeps the separate kernel).
  void fuse_matvec_ropes() {
    const char* off = std::getenv("KESTREL_CUDA_QKV_ROPE");
    if (off && std::strcmp(off, "0") == 0) return;
    for (size_t i = 0; i + 3 < nodes_.size(); ++i) {
      if (node_kind_[i] != kMatvecGroup || group_n_[i] != 3 || add_of_[i] != kNone) continue;
      const size_t j = i + 3;
      if (node_kind_[j] != kRopeStore) continue;
      const Tensor &q = nodes_[j].dst, &k = nodes_[j + 1].dst, &v = nodes_[j + 3].src[0];
      const int64_t D = q.ne[0];
      if (calls_[j].p<RopeParams>().n_dims != D || q.ne[2] != 1 || q.nb[1] != static_cast<size_t>(D) * 4) continue;
      if (q.data != nodes_[i].dst.data || k.data != nodes_[i + 1].dst.data || v.data != nodes_[i + 2].dst.data)
        continue;
      MatvecSegs segs;
      for (size_t s = i; s < j; ++s) segs.add(view(nodes_[s].src[0]), view(nodes_[s].dst));
      if (!matvec_can_rope(segs, view(nodes_[i].src[1]), D, q.ne[1], k.ne[1])) continue;
      rope_of_[i] = static_cast<uint32_t>(j);
      node_kind_[j] = kFusedAway;
    }
  }

  // Consecutive matmuls on one x (q / k / v) become one launch; a gate / up
  // pair followed by its gated activation becomes one kernel.
  void group_matvecs() {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].op != OpId::matmul || node_kind_[i] != kPlain || !matmul_uses_matvec(calls_[i]) ||
          overlaps(nodes_[i].dst, nodes_[i].src[1]))
        continue;
      if (glu_at(i)) {
        node_kind_[i] = kGlu;
        node_kind_[i + 1] = node_kind_[i + 2] = kFusedAway;
        i += 2;
        continue;
      }
      size_t j = i + 1;
      while (j < nodes_.size() && j - i < static_cast<size_t>(kMatvecMaxSegs) && matvec_joins(i, j)) ++j;
      if (j - i < 2) continue;
      node_kind_[i] = kMatvecGroup;
      group_n_[i] = static_cast<uint32_t>(j - i);
      for (size_t k = i + 1; k < j; ++k) node_kind_[k] = kFusedAway;
      i = j - 1;
    }
  }

  // A residual add whose sum the next node normalises (rms_norm reading
  // exactly the add's destination): one kernel for both.
  bool add_then_norm(size_t i) const {
    if (i + 1 >= nodes_.size()) return false;
    const PlanNode& a = nodes_[i];
    const PlanNode& n = nodes_[i + 1];
    if (a.op != OpId::add || n.op != OpId::rms_norm) return false;
    const Tensor &x = a.src[0], &o = a.src[1], &d = a.dst, &ns = n.src[0];
    for (const Tensor* t : {&x, &o, &d, &ns, &n.dst})
      if (t->type != DType::F32) return false;
    if (n.n_src > 1 && n.src[1].type != DType::F32) return false;
    bool same = ns.data == d.data;
    for (int k = 0; k < 4 && same; ++k)
      same = x.ne[k] == d.ne[k] && o.ne[k] == d.ne[k] && ns.ne[k] == d.ne[k] && ns.nb[k] == d.nb[k] &&
             n.dst.ne[k] == d.ne[k];
    return same;
  }

  Status launch_nodes() {
    for (size_t i = 0; i < calls_.size(); ++i) {
      Status st = launch_node(i);
      if (!st.ok()) {
        (void)cudaStreamSynchronize(ctx_.stream);  // nothing queued may outlive the step
        return std::move(st.with_context("plan node " + std::to_string(i) + ": "));
      }
    }
    return {};
  }

  // Records the node launches on the stream into graph_ (nothing runs).
  Status capture() {
    const cudaStream_t s = ctx_.stream;
    KESTREL_TRY(cuda_check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "graph capture"));
    Status st;
    for (size_t i = 0; i < calls_.size() && st.ok(); ++i) st = launch_node(i);
    cudaGraph_t g = nullptr;
    const cudaError_t end = cudaStreamEndCapture(s, &g);
    if (st.ok() && end == cudaSuccess && g) st = cuda_check(cudaGraphInstantiate(&graph_, g, 0), "graph instantiate");
    else if (st.ok()) st = cuda_check(end == cudaSuccess ? cudaErrorStreamCaptureInvalidated : end, "graph capture");
    if (g) (void)cudaGraphDestroy(g);
    if (!st.ok()) {
      (void)cudaGetLastError();
      graph_ = nullptr;
    }
    return st;
  }

  // A failed enqueue still drains what was queued before it returns.
  Status drained(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return {};
    (void)cudaStreamSynchronize(ctx_.stream);
    return cuda_check(err, what);
  }

  Status map_roots(const Plan& plan) {
    for (size_t i = 0; i < roots_.size(); ++i) {
      DeviceRoot& r = roots_[i];
      r.host = plan.roots()[i];
      if (!r.host.bytes) continue;
      // Memory of this device already (a KV cache allocated through the
      // backend): the plan's addresses are device addresses.
      cudaPointerAttributes attr{};
      if (cudaPointerGetAttributes(&attr, r.host.base) == cudaSuccess && attr.type == cudaMemoryTypeDevice) {
        if (attr.device != ctx_.device)
          return Status::invalid_argument("plan root %s is memory of CUDA device %d, not %d", r.host.name, attr.device,
                                          ctx_.device);
        r.base = r.host.base;
        continue;
      }
      (void)cudaGetLastError();
      // Step memory (activations, inputs, outputs) carries nothing from one
      // step to the next: plans over the same host memory share its device copy.
      if (r.host.role == SlotRole::activation || r.host.role == SlotRole::input || r.host.role == SlotRole::output) {
        KESTREL_TRY_ASSIGN(Residency::StepMemory m, ctx_.resident.step_memory(r.host.base, r.host.bytes, ctx_.device));
        r.dev = std::move(m.buf);
        r.base = m.base;
        continue;
      }
      // A KV cache in host memory starts as its contents (and stays on the
      // device from then on); a root of weights is read-only data.
      KESTREL_TRY_ASSIGN(auto copy, device_copy_of(r.host.base, r.host.bytes, ctx_.device));
      r.dev = std::move(copy.first);
      r.base = copy.second;
      KESTREL_TRY(drained(cudaMemcpyAsync(r.base, r.host.base, r.host.bytes, cudaMemcpyHostToDevice, ctx_.stream),
                          "prepare: upload root"));
    }
    return {};
  }

  // The distinct weight ranges the nodes read, merged where they overlap or
  // touch (views of one tensor share its copy), each uploaded once.
  Status map_weights(const Plan& plan) {
    std::vector<std::pair<const char*, const char*>> spans;
    try {
      for (const PlanNode& n : nodes_)
        for (int s = 0; s < n.n_src; ++s) {
          const Tensor& t = n.src[s];
          const size_t bytes = t.nbytes();
          if (!t.data || !bytes || plan.root_of(t.data) >= 0 || ctx_.resident.weight_address(t.data, bytes)) continue;
          const char* lo = static_cast<const char*>(t.data);
          spans.emplace_back(lo, lo + bytes);
        }
      std::sort(spans.begin(), spans.end());
      for (const auto& [lo, hi] : spans) {
        if (!weights_.empty() && lo <= weights_.back().lo + weights_.back().bytes) {
          Weight& w = weights_.back();
          w.bytes = std::max<size_t>(w.bytes, static_cast<size_t>(hi - w.lo));
        } else {
          weights_.push_back(Weight{lo, static_cast<size_t>(hi - lo), nullptr, nullptr});
        }
      }
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("cuda executable weight map");
    }
    for (Weight& w : weights_) {
      KESTREL_TRY_ASSIGN(auto copy, device_copy_of(w.lo, w.bytes, ctx_.device));
      w.dev = std::move(copy.first);
      w.base = copy.second;
      KESTREL_TRY(drained(cudaMemcpyAsync(w.base, w.lo, w.bytes, cudaMemcpyHostToDevice, ctx_.stream),
                          "prepare: upload weights"));
    }
    return {};
  }

  // Points t at the device copy of the memory it views.
  Status rebase(const Plan& plan, Tensor& t, size_t node, bool is_dst) {
    t.buffer = nullptr;
    if (!t.data) return {};
    const char* p = static_cast<const char*>(t.data);
    const size_t bytes = t.nbytes();
    const int r = plan.root_of(p);
    if (r < 0 && bytes == 0) return {};  // an empty view reads nothing
    if (r >= 0) {
      DeviceRoot& root = roots_[static_cast<size_t>(r)];
      const size_t off = static_cast<size_t>(p - root.host.base);
      if (bytes > root.host.bytes - off)
        return Status::invalid_argument("plan node %zu (%s): a tensor runs past root %s", node,
                                        op_name(nodes_[node].op), root.host.name);
      root.used = true;
      t.data = root.base + off;
      return {};
    }
    if (is_dst)
      return Status::invalid_argument("plan node %zu (%s): the destination lies outside every root", node,
                                      op_name(nodes_[node].op));
    if (char* dev = ctx_.resident.weight_address(p, bytes)) {
      t.data = dev;
      return {};
    }
    // The weight run holding [p, p + bytes): the last one starting at or before p.
    auto it = std::upper_bound(weights_.begin(), weights_.end(), p,
                               [](const char* q, const Weight& w) { return q < w.lo; });
    if (it == weights_.begin()) return Status::internal("plan node %zu: weight not mapped", node);
    --it;
    t.data = it->base + (p - it->lo);
    return {};
  }

  Context& ctx_;
  std::vector<PlanNode> nodes_;  // tensors rebased to device addresses
  std::vector<OpCall> calls_;    // over nodes_
  std::vector<DeviceRoot> roots_;
  std::vector<Weight> weights_;  // sorted by lo, disjoint
  std::vector<IdCheck> id_checks_;
  // How each node launches: as itself; a matmul whose x the matmul before
  // already quantized; an add fused with the rms_norm after it (which then
  // launches nothing).
  // A matmul group runs group_n_ matmuls on one x as one matvec launch; a
  // GLU node its gate, up and activation nodes as one kernel.
  // A matvec group or GLU node may also run the rms_norm node norm_of_ as its
  // prologue and (a group of one) the add node add_of_ as its epilogue.
  // An attention node may write its output's 8-bit records for the matvec
  // launch after it (kAttnRecords; that launch's x_records_ is set). A q / k /
  // v group may run the rope + store run rope_of_ as its epilogue.
  enum NodeKind : uint8_t { kPlain, kReuseQx, kAddNorm, kMatvecGroup, kGlu, kRopeStore, kAttnRecords, kFusedAway };
  static constexpr uint32_t kNone = UINT32_MAX;
  std::vector<uint8_t> node_kind_;
  std::vector<uint32_t> group_n_;
  std::vector<uint32_t> norm_of_;
  std::vector<uint32_t> add_of_;
  std::vector<uint8_t> x_records_;
  std::vector<uint32_t> rope_of_;  // a group's rope + store run (kRopeStore node), or kNone
  cudaGraphExec_t graph_ = nullptr;
  uint64_t n_steps_ = 0;
  bool graph_failed_ = false;
};

}  // namespace

Expected<std::unique_ptr<Executable>> prepare_plan(Context& ctx, const Backend& backend, const Plan& plan) {
  std::unique_ptr<CudaExecutable> e(new (std::nothrow) CudaExecutable(ctx));
  if (!e) return Status::out_of_memory("cuda executable");
  KESTREL_TRY(e->prepare(backend, plan));
  return std::unique_ptr<Executable>(std::move(e));
}

}  // namespace kestrel::cuda
