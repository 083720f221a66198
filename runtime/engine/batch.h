// A batch of tokens for one forward pass. Each token carries its sequence id
// and position, so one path serves prompt processing, several sequences
// decoding together, and verifying drafted tokens.
#pragma once

#include <cstdint>

namespace kestrel {

struct BatchView {
  int32_t n_tokens = 0;
  const int32_t* tokens = nullptr;  // [n_tokens] ids in [0, n_vocab)
  const int32_t* pos = nullptr;     // [n_tokens] positions >= 0
  const int32_t* seq_id = nullptr;  // [n_tokens] in [0, n_seq_max); nullptr = all 0
  const int8_t* logits = nullptr;   // [n_tokens] 1 = produce logits; nullptr = last token only
};

}  // namespace kestrel
