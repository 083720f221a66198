// kestrel_ks_factorize: dense projections of a GGUF model to Kronecker-sparse factor
// chains (runtime/ks/ks_factorize.h).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "runtime/c_api_internal.h"
#include "runtime/ks/ks_factorize.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t end = std::min(s.find(sep, pos), s.size());
    if (end > pos) out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

Status to_options(const kestrel_ks_factorize_params& p, KsFactorizeOptions* o) {
  if (p.layers)
    for (const std::string& t : split(p.layers, ',')) {
      char* e = nullptr;
      const long v = std::strtol(t.c_str(), &e, 10);
      if (*e != '\0' || v < 0 || v > (1 << 20)) return Status::invalid_argument("bad layer '%s'", t.c_str());
      o->layers.push_back((int)v);
    }
  if (p.projs) o->projs = split(p.projs, ',');
  for (const std::string& item : split(p.pattern ? p.pattern : "", ';')) {
    if (item.rfind("monarch", 0) == 0) {
      char* e = nullptr;
      const long v = std::strtol(item.c_str() + 7, &e, 10);
      if (*e != '\0' || v < 1 || v > 4096) return Status::invalid_argument("bad pattern '%s' (monarchN)", item.c_str());
      o->monarch_blocks = (int)v;
      continue;
    }
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      return Status::invalid_argument("bad pattern '%s': want monarchN or proj=a,b,c,d:a,b,c,d", item.c_str());
    KESTREL_TRY_ASSIGN(o->chains[item.substr(0, eq)], ks_parse_chain(item.substr(eq + 1)));
  }
  if (o->monarch_blocks == 0 && o->chains.empty()) return Status::invalid_argument("no pattern given");
  o->iters = p.iters;
  switch (p.factor_type) {
    case 0: o->type = DType::F32; break;
    case 1: o->type = DType::F16; break;
    case 30: o->type = DType::BF16; break;
    default: return Status::invalid_argument("factor_type %d: 0 (F32), 1 (F16) or 30 (BF16)", (int)p.factor_type);
  }
  o->seed = p.seed;
  return {};
}

}  // namespace

extern "C" kestrel_ks_factorize_params kestrel_ks_factorize_default_params(void) {
  kestrel_ks_factorize_params p;
  p.layers = nullptr;
  p.projs = nullptr;
  p.pattern = "monarch4";
  p.iters = 4;
  p.factor_type = 1;
  p.seed = 1;
  return p;
}

extern "C" kestrel_status kestrel_ks_factorize(const char* in_path, const char* out_path,
                                               const kestrel_ks_factorize_params* params, kestrel_ks_layer_fn on_layer,
                                               void* user_data) {
  const Status s = guarded([&]() -> Status {
    if (!in_path || !out_path || !params)
      return Status::invalid_argument("kestrel_ks_factorize: paths and params must not be NULL");
    KsFactorizeOptions o;
    KESTREL_TRY(to_options(*params, &o));
    return ks_factorize_file(in_path, out_path, o, nullptr, [&](const KsLayerReport& r) {
      if (on_layer)
        on_layer(r.tensor.c_str(), r.chain.c_str(), r.dense_params, r.ks_params, r.rel_error, r.seconds, user_data);
    });
  });
  return s.ok() ? KESTREL_OK : fail_global(s);
}
