// libtorch AOTInductor backend of graphport_infer: a .pt2 package compiled for the CPU.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include "model_io.h"
#include "runtime.h"

namespace graphport {

struct Model::Impl {
  explicit Impl(const std::string& package) : loader(package) {}
  torch::inductor::AOTIModelPackageLoader loader;
};

Model::Model(const std::string& model_dir)
    : impl_(std::make_unique<Impl>(model_dir + "/" + kModelFile)) {}

Model::~Model() = default;

std::vector<Output> Model::run(const std::vector<std::vector<int64_t>>& feeds) {
  c10::InferenceMode inference_mode;
  // The package takes its inputs positionally, in the manifest's order.
  std::vector<at::Tensor> inputs;
  for (size_t i = 0; i < kNumInputs; ++i) {
    const auto size = static_cast<int64_t>(feeds[i].size());
    at::Tensor tensor = at::empty({1, size}, at::kLong);
    std::copy(feeds[i].begin(), feeds[i].end(), tensor.data_ptr<int64_t>());
    inputs.push_back(kInputBits[i] == 64 ? tensor : tensor.to(at::kInt));
  }
  const std::vector<at::Tensor> results = impl_->loader.run(inputs);
  std::vector<Output> outputs;
  for (const at::Tensor& result : results) {
    Output output;
    for (int64_t d : result.sizes()) output.shape.push_back(d);
    const at::Tensor head =
        result.flatten().slice(0, 0, static_cast<int64_t>(kHead)).to(at::kDouble).contiguous();
    const double* data = head.data_ptr<double>();
    output.head.assign(data, data + head.numel());
    outputs.push_back(output);
  }
  return outputs;
}

// libtorch runs no tokenizer graph: a pt2 deployment takes token ids only.
struct Tokenizer::Impl {};

std::string Tokenizer::find(const std::string&) { return ""; }

Tokenizer::Tokenizer(const std::string&) {
  throw std::runtime_error("the libtorch backend runs no tokenizer graph");
}

Tokenizer::~Tokenizer() = default;

std::map<std::string, std::vector<int64_t>> Tokenizer::encode(const std::string&) { return {}; }

}  // namespace graphport
