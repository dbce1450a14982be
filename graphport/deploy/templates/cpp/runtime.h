// The interface each runtime backend of graphport_infer implements (runtime.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
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

}  // namespace graphport
