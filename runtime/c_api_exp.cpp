// The C API's exp tier fields (kestrel_exp_tier) mapped onto the engine's
// per-op tiers, with the check that names the offending field.
#include "runtime/c_api_internal.h"

namespace kestrel::capi {

Status exp_tier_from_c(int32_t value, const char* field, ExpTier* out) {
  const ExpTier t = static_cast<ExpTier>(value);
  if (!exp_tier_valid(t))
    return Status::invalid_argument("%s = %d is not a kestrel_exp_tier (0 exact, 1 quake2, 2 quake1)", field, (int)value);
  *out = t;
  return {};
}

Status exp_tiers_from_c(const kestrel_context_params& p, OpExpTiers* out) {
  KESTREL_TRY(exp_tier_from_c(p.exp_softmax, "exp_softmax", &out->softmax));
  KESTREL_TRY(exp_tier_from_c(p.exp_gelu, "exp_gelu", &out->gelu));
  KESTREL_TRY(exp_tier_from_c(p.exp_silu, "exp_silu", &out->silu));
  return exp_tier_from_c(p.exp_sigmoid, "exp_sigmoid", &out->sigmoid);
}

}  // namespace kestrel::capi
