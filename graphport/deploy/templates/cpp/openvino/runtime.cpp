// OpenVINO backend of graphport_infer: ONNX graphs and OpenVINO IR, compiled for the CPU.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <openvino/openvino.hpp>

#include "model_io.h"
#include "runtime.h"

namespace graphport {

struct Model::Impl {
  ov::InferRequest request;
};

namespace {

template <typename T>
ov::Tensor make_tensor(ov::element::Type type, const std::vector<int64_t>& values) {
  ov::Tensor tensor(type, ov::Shape{1, values.size()});
  std::transform(values.begin(), values.end(), tensor.data<T>(),
                 [](int64_t v) { return static_cast<T>(v); });
  return tensor;
}

template <typename T>
std::vector<double> head_of(const ov::Tensor& tensor) {
  const T* data = tensor.data<T>();
  std::vector<double> head;
  for (size_t i = 0; i < std::min(kHead, tensor.get_size()); ++i) {
    if constexpr (std::is_arithmetic_v<T>) {
      head.push_back(static_cast<double>(data[i]));
    } else {  // ov::float16, ov::bfloat16
      head.push_back(static_cast<double>(static_cast<float>(data[i])));
    }
  }
  return head;
}

std::vector<double> head_of(const ov::Tensor& tensor) {
  const ov::element::Type type = tensor.get_element_type();
  if (type == ov::element::f32) return head_of<float>(tensor);
  if (type == ov::element::f16) return head_of<ov::float16>(tensor);
  if (type == ov::element::bf16) return head_of<ov::bfloat16>(tensor);
  if (type == ov::element::f64) return head_of<double>(tensor);
  if (type == ov::element::i64) return head_of<int64_t>(tensor);
  if (type == ov::element::i32) return head_of<int32_t>(tensor);
  if (type == ov::element::boolean || type == ov::element::u8) return head_of<uint8_t>(tensor);
  throw std::runtime_error("cannot print an output of element type " + type.get_type_name());
}

}  // namespace

// openvino-tokenizers' IR, converted at deploy time; its operators are in the extension
// library, whose path CMakeLists.txt compiles in (GRAPHPORT_TOKENIZERS_LIBRARY).
constexpr const char* kTokenizerFile = "openvino_tokenizer.xml";

struct Tokenizer::Impl {
  ov::InferRequest request;
  std::vector<std::string> outputs;
};

std::string Tokenizer::find(const std::string& model_dir) {
  const std::string path = model_dir + "/" + kTokenizerFile;
  return std::ifstream(path).good() ? path : "";
}

Tokenizer::Tokenizer(const std::string& model_dir) : impl_(std::make_unique<Impl>()) {
  ov::Core core;
  core.add_extension(GRAPHPORT_TOKENIZERS_LIBRARY);
  ov::CompiledModel compiled = core.compile_model(model_dir + "/" + kTokenizerFile, "CPU");
  impl_->request = compiled.create_infer_request();
  for (const ov::Output<const ov::Node>& output : compiled.outputs()) {
    impl_->outputs.push_back(output.get_any_name());
  }
}

Tokenizer::~Tokenizer() = default;

std::map<std::string, std::vector<int64_t>> Tokenizer::encode(const std::string& text) {
  ov::Tensor input(ov::element::string, ov::Shape{1});  // a batch of one text
  input.data<std::string>()[0] = text;
  impl_->request.set_input_tensor(input);
  impl_->request.infer();
  std::map<std::string, std::vector<int64_t>> encoding;
  for (const std::string& name : impl_->outputs) {
    const ov::Tensor tensor = impl_->request.get_tensor(name);
    std::vector<int64_t>& ids = encoding[name];
    if (tensor.get_element_type() == ov::element::i64) {
      ids.assign(tensor.data<int64_t>(), tensor.data<int64_t>() + tensor.get_size());
    } else if (tensor.get_element_type() == ov::element::i32) {
      ids.assign(tensor.data<int32_t>(), tensor.data<int32_t>() + tensor.get_size());
    } else {
      throw std::runtime_error("the tokenizer returned " + name + " of element type " +
                               tensor.get_element_type().get_type_name());
    }
  }
  return encoding;
}

Model::Model(const std::string& model_dir) : impl_(std::make_unique<Impl>()) {
  ov::Core core;
  const std::shared_ptr<ov::Model> model = core.read_model(model_dir + "/" + kModelFile);
  // The export's own precision: on CPUs with bf16 units OpenVINO would otherwise compute an
  // fp32 graph in bf16, far from the eager model.
  ov::CompiledModel compiled = core.compile_model(
      model, "CPU", ov::hint::inference_precision(ov::element::Type(kPrecision)));
  impl_->request = compiled.create_infer_request();
}

Model::~Model() = default;

std::vector<Output> Model::run(const std::vector<std::vector<int64_t>>& feeds) {
  for (size_t i = 0; i < kNumInputs; ++i) {
    impl_->request.set_tensor(kInputs[i], kInputBits[i] == 64
                                              ? make_tensor<int64_t>(ov::element::i64, feeds[i])
                                              : make_tensor<int32_t>(ov::element::i32, feeds[i]));
  }
  impl_->request.infer();
  std::vector<Output> outputs;
  for (const char* name : kOutputs) {
    const ov::Tensor tensor = impl_->request.get_tensor(name);
    Output output;
    for (size_t d : tensor.get_shape()) output.shape.push_back(static_cast<int64_t>(d));
    output.head = head_of(tensor);
    outputs.push_back(output);
  }
  return outputs;
}

}  // namespace graphport
