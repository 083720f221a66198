// bench_greedy_trace: greedy generation that prints, per step, the chosen id,
// its piece and the margin between the two best logits. Used to compare
// kestrel's greedy tokens with another runtime's and to explain any
// divergence by the logit margin at the step where it happens.
//
//   bench_greedy_trace -m model.gguf -p "The capital of France is" -n 64
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <kestrel/kestrel.h>

int main(int argc, char** argv) {
  CLI::App app{"greedy generation with per-step logit margins"};
  std::string model_path, prompt;
  int n_predict = 64, threads = 2;
  app.add_option("-m,--model", model_path)->required();
  app.add_option("-p,--prompt", prompt);
  app.add_option("-n,--n-predict", n_predict)->check(CLI::Range(1, 4096));
  app.add_option("-t,--threads", threads)->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);

  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = nullptr;
  if (kestrel_model_load(model_path.c_str(), &mp, &model) != KESTREL_OK) {
    std::fprintf(stderr, "load: %s\n", kestrel_last_error(nullptr));
    return 2;
  }
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 1024;
  cp.n_threads = threads;
  kestrel_context* ctx = nullptr;
  if (kestrel_context_create(model, &cp, &ctx) != KESTREL_OK) {
    std::fprintf(stderr, "context: %s\n", kestrel_last_error(nullptr));
    return 1;
  }
  std::vector<kestrel_token> ids(prompt.size() + 8);
  int32_t n = 0;
  if (kestrel_tokenize(model, prompt.data(), prompt.size(), 1, 0, ids.data(), static_cast<int32_t>(ids.size()), &n) !=
      KESTREL_OK) {
    std::fprintf(stderr, "tokenize: %s\n", kestrel_last_error(model));
    return 1;
  }
  ids.resize(static_cast<size_t>(n));
  std::printf("prompt_ids");
  for (kestrel_token t : ids) std::printf(" %d", t);
  std::printf("\n");
  const int32_t V = kestrel_model_n_vocab(model);
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  kestrel_batch b{n, ids.data(), pos.data(), nullptr, nullptr};
  int32_t p = n;
  std::string text;
  for (int step = 0; step < n_predict; ++step) {
    if (kestrel_decode(ctx, &b) != KESTREL_OK) {
      std::fprintf(stderr, "decode: %s\n", kestrel_last_error(ctx));
      return 1;
    }
    const float* l = kestrel_get_logits(ctx, 0);
    int32_t best = 0, second = -1;
    for (int32_t i = 1; i < V; ++i) {
      if (l[i] > l[best]) {
        second = best;
        best = i;
      } else if (second < 0 || l[i] > l[second]) {
        second = i;
      }
    }
    char piece[256];
    size_t len = 0;
    if (kestrel_token_to_piece(model, best, 0, piece, sizeof piece, &len) != KESTREL_OK) len = 0;
    std::string s(piece, std::min(len, sizeof piece));
    for (char& c : s)
      if (c == '\n') c = ' ';
    std::printf("step %d id %d margin %.4f piece '%s'\n", step, best, l[best] - l[second], s.c_str());
    text += std::string(piece, std::min(len, sizeof piece));
    if (kestrel_token_is_eog(model, best)) break;
    static kestrel_token tok;
    static int32_t tok_pos;
    tok = best;
    tok_pos = p++;
    b = kestrel_batch{1, &tok, &tok_pos, nullptr, nullptr};
  }
  std::printf("text %s\n", text.c_str());
  kestrel_context_free(ctx);
  kestrel_model_free(model);
  return 0;
}
