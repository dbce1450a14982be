// The interface each runtime backend of graphport_infer implements (runtime.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace graphport {

constexpr size_t kHead = 8;  // values printed per output

struct Output {
  std::vector<int64_t> shape;
  std::vector<double> head;  // the first kHead values, row-major
};

// The export's graph, loaded from its directory and compiled for the CPU.
class Model {
 public:
  explicit Model(const std::string& model_dir);
  ~Model();
  // One feed per graph input, in kInputs' order, each of shape [1, n]; one Output per graph
  // output, in kOutputs' order.
  std::vector<Output> run(const std::vector<std::vector<int64_t>>& feeds);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The export's tokenizer as a graph, written beside the model by `graphport deploy` where
// the backend runs one (OpenVINO: openvino_tokenizer.xml and the openvino-tokenizers
// extension library in lib/).
class Tokenizer {
 public:
  // The tokenizer graph's path in model_dir, or "" when this deployment has none.
  static std::string find(const std::string& model_dir);
  explicit Tokenizer(const std::string& model_dir);
  ~Tokenizer();
  // One text's encoding, truncated and with special tokens as the Python tokenizer does:
  // each of input_ids, attention_mask and token_type_ids that the graph returns.
  std::map<std::string, std::vector<int64_t>> encode(const std::string& text);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace graphport
