// With quantized weights a token gets bitwise the same logits whether it is decoded
// alone or inside a batch (prompt processing, several sequences, verifying drafted
// tokens): every quantized matmul path computes an output row with the same float
// operations whatever the batch size. This matters beyond rounding: each layer rounds
// its activations to 8 bits, so a last-bit difference can flip a rounding and grow
// into ~1e-3 NMSE of the logits, and greedy speculative decoding would then leave
// plain greedy decoding at the first near-tie. Float weights (no activation rounding)
// are held to rounding level (NMSE < 1e-8): their prompt tiles sum in another order.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "model_test_util.h"
#include "runtime/model/synth.h"

using namespace kestrel;

namespace {

std::unique_ptr<Context> make_ctx(const Model& m, int threads, DType kv) {
  ContextParams cp;
  cp.n_ctx = 64;
  cp.n_batch = 32;
  cp.n_threads = threads;
  cp.kv_type = kv;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

}  // namespace

TEST_CASE("a token's logits do not depend on the batch it is decoded in", "[model][batch]") {
  const std::vector<int32_t> ids = {1, 300, 17, 260, 299, 45, 261, 310, 5, 270, 301};
  for (ArchId arch : {ArchId::llama, ArchId::qwen2, ArchId::gemma3})
    for (const char* w : {"q8_0", "q4_0", "q5_0", "q4_k_m", "q5_k", "f16"}) {
      const bool is_float = std::string(w) == "f16";
      SynthSpec s;
      s.arch = arch;
      s.weights = w;
      s.n_embd = 256;  // one K-quant super-block, 8 blocks of 32 per row
      s.n_ff = 512;
      auto bytes = synth_model_gguf(s);
      REQUIRE(bytes.status().to_string() == "ok");
      auto mr = Model::load_from_memory(bytes.value().data(), bytes.value().size(), ModelParams{});
      REQUIRE(mr.status().to_string() == "ok");
      const Model& m = *mr.value();
      const int64_t V = m.hparams().n_vocab;
      for (int threads : {1, 2})
        for (DType kv : {DType::F16, DType::F32}) {
          INFO(arch_desc(arch).name << " " << w << " threads " << threads << " kv " << dtype_name(kv));
          // One batch of all tokens (groups of 4 and leftovers) ...
          auto a = make_ctx(m, threads, kv);
          std::vector<float> batched;
          REQUIRE(testutil::decode_all(*a, ids, 0, 0, &batched).to_string() == "ok");
          // ... against one token at a time, and against batches of 5 then 6.
          auto b = make_ctx(m, threads, kv);
          auto c = make_ctx(m, threads, kv);
          std::vector<float> chunk;
          std::vector<int32_t> first(ids.begin(), ids.begin() + 5), rest(ids.begin() + 5, ids.end());
          REQUIRE(testutil::decode_all(*c, first, 0, 0, &chunk).to_string() == "ok");
          std::vector<float> chunk2;
          REQUIRE(testutil::decode_all(*c, rest, 5, 0, &chunk2).to_string() == "ok");
          chunk.insert(chunk.end(), chunk2.begin(), chunk2.end());
          for (size_t i = 0; i < ids.size(); ++i) {
            std::vector<float> one;
            REQUIRE(testutil::decode_all(*b, {ids[i]}, static_cast<int32_t>(i), 0, &one).to_string() == "ok");
            const float* x = batched.data() + i * static_cast<size_t>(V);
            const float* y = chunk.data() + i * static_cast<size_t>(V);
            int64_t diff_one = 0, diff_chunk = 0;
            for (int64_t j = 0; j < V; ++j) {
              diff_one += x[j] != one[static_cast<size_t>(j)];
              diff_chunk += x[j] != y[j];
            }
            INFO("token " << i);
            if (is_float) {
              CHECK(testutil::nmse(x, one.data(), static_cast<size_t>(V)) < 1e-8);
              CHECK(testutil::nmse(x, y, static_cast<size_t>(V)) < 1e-8);
            } else {
              CHECK(diff_one == 0);
              CHECK(diff_chunk == 0);
            }
          }
        }
    }
}
