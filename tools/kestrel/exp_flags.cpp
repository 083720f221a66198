// --exp exact|quake2|quake1 and the per-op overrides --exp-softmax,
// --exp-gelu, --exp-silu, --exp-sigmoid, shared by run, bench and perplexity.
// CLI11 checks each value, so a bad one is a usage error (exit 2) naming the flag.
#include <string>

#include "cli.h"

namespace kcli {

namespace {

int32_t tier_of(const std::string& name) {
  if (name == "quake2") return KESTREL_EXP_QUAKE2;
  if (name == "quake1") return KESTREL_EXP_QUAKE1;
  return KESTREL_EXP_EXACT;
}

// The override when given, else --exp, else exact.
int32_t pick(const std::string& op, const std::string& all) { return tier_of(!op.empty() ? op : all); }

}  // namespace

void add_exp_flags(CLI::App* sub, ExpFlags& f) {
  const auto tiers = CLI::IsMember({"exact", "quake2", "quake1"});
  sub->add_option("--exp", f.all, "exp tier of every exp-based op: exact (default), quake2 or quake1")
      ->check(tiers);
  sub->add_option("--exp-softmax", f.softmax, "exp tier of the attention and sampling softmax (overrides --exp)")
      ->check(tiers);
  sub->add_option("--exp-gelu", f.gelu, "exp tier of GELU / GeGLU (overrides --exp)")->check(tiers);
  sub->add_option("--exp-silu", f.silu, "exp tier of SiLU / SwiGLU (overrides --exp)")->check(tiers);
  sub->add_option("--exp-sigmoid", f.sigmoid, "exp tier of sigmoid (overrides --exp)")->check(tiers);
}

void apply_exp_flags(const ExpFlags& f, kestrel_context_params* cp, kestrel_sampler_params* sp) {
  if (cp) {
    cp->exp_softmax = pick(f.softmax, f.all);
    cp->exp_gelu = pick(f.gelu, f.all);
    cp->exp_silu = pick(f.silu, f.all);
    cp->exp_sigmoid = pick(f.sigmoid, f.all);
  }
  if (sp) sp->exp_softmax = pick(f.softmax, f.all);
}

bool exp_flags_any_quake(const ExpFlags& f) {
  for (const std::string* op : {&f.softmax, &f.gelu, &f.silu, &f.sigmoid})
    if (pick(*op, f.all) != KESTREL_EXP_EXACT) return true;
  return false;
}

std::string exp_flags_summary(const ExpFlags& f) {
  const auto name = [&](const std::string& op) { return !op.empty() ? op : !f.all.empty() ? f.all : "exact"; };
  return "softmax " + name(f.softmax) + ", gelu " + name(f.gelu) + ", silu " + name(f.silu) + ", sigmoid " +
         name(f.sigmoid);
}

}  // namespace kcli
