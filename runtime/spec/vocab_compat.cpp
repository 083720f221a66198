// Draft-model vocabulary compatibility and the GGUF keys of simultaneous
// drafting (see speculative.h).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "runtime/model/gguf.h"
#include "runtime/spec/speculative.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel {

namespace {

// Vocabulary sizes of a target and its draft may differ by padding rows or a
// few added tokens (Qwen2.5 sizes pad to 151936 vs 151665 texts); more than
// this means different tokenizers.
constexpr int32_t kMaxVocabDiff = 128;

const char* kind_name(Tokenizer::Kind k) { return k == Tokenizer::Kind::spm ? "spm" : "bpe"; }

}  // namespace

SpecInfo spec_info(const Model& model) {
  SpecInfo info;
  const gguf::File& f = model.file();
  if (!f.has("kestrel.spec.mask_token_id")) return info;
  auto id = f.get_u32("kestrel.spec.mask_token_id");
  auto n = f.get_u32("kestrel.spec.mask_n_predict");
  if (!id.ok() || *id >= static_cast<uint32_t>(model.hparams().n_vocab)) return info;
  info.has_mask_tokens = true;
  info.mask_token_id = static_cast<int32_t>(*id);
  info.mask_n_predict = n.ok() ? static_cast<int32_t>(std::min<uint32_t>(*n, 64)) : 0;
  return info;
}

Status check_vocab_compat(const Model& target, const Model& draft) {
  const Tokenizer& a = target.tokenizer();
  const Tokenizer& b = draft.tokenizer();
  if (a.kind() != b.kind())
    return Status::invalid_argument("draft model is incompatible: tokenizer type %s, the target's is %s",
                                    kind_name(b.kind()), kind_name(a.kind()));
  const int32_t na = a.n_vocab(), nb = b.n_vocab();
  if (std::abs(na - nb) > kMaxVocabDiff)
    return Status::invalid_argument(
        "draft model is incompatible: vocabulary of %d tokens, the target's has %d (more than %d apart)", nb, na,
        kMaxVocabDiff);
  const int64_t la = target.hparams().n_vocab, lb = draft.hparams().n_vocab;
  if (std::abs(la - lb) > kMaxVocabDiff)
    return Status::invalid_argument("draft model is incompatible: %lld output rows, the target has %lld",
                                    (long long)lb, (long long)la);
  if (a.bos() != b.bos() || a.eos() != b.eos())
    return Status::invalid_argument("draft model is incompatible: BOS/EOS %d/%d, the target's are %d/%d", b.bos(),
                                    b.eos(), a.bos(), a.eos());
  const int32_t n = std::min(na, nb);
  for (int32_t i = 0; i < n; ++i) {
    if (a.token_text(i) != b.token_text(i)) {
      std::string ta(a.token_text(i)), tb(b.token_text(i));
      if (ta.size() > 40) ta.resize(40);
      if (tb.size() > 40) tb.resize(40);
      return Status::invalid_argument("draft model is incompatible: token %d is '%s' in the draft, '%s' in the target",
                                      i, tb.c_str(), ta.c_str());
    }
  }
  return {};
}

}  // namespace kestrel
