// graphport_infer: run a graphport export on one text or one sequence of token ids and print
// its outputs as one JSON object: {"outputs": {name: {"shape": [...], "head": [...]}}}.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "model_io.h"
#include "runtime.h"

namespace {

constexpr const char* kUsage =
    "usage: graphport_infer [--model DIR] (--text TEXT | --ids 101,7592,2088,102) [--timings]\n"
    "Runs one sequence (batch 1) and prints\n"
    "{\"outputs\": {name: {\"shape\": [...], \"head\": [first 8 values]}}}. --text encodes TEXT\n"
    "with the deployment's tokenizer graph, as the export's Python tokenizer does, and adds\n"
    "its \"input_ids\"; --ids feeds an attention mask of ones and token types of zeros.\n"
    "--timings adds {\"timings\": {\"load_ms\": ..., \"infer_ms\": ...}}. DIR defaults to\n"
    GRAPHPORT_MODEL_DIR ".\n";

using Encoding = std::map<std::string, std::vector<int64_t>>;

bool parse_ids(const std::string& text, std::vector<int64_t>* ids) {
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    size_t used = 0;
    try {
      ids->push_back(std::stoll(item, &used));
    } catch (const std::exception&) {
      return false;
    }
    if (used != item.size()) return false;
  }
  return !ids->empty();
}

// The feed of each graph input, in graphport::kInputs' order: the encoding's own mask and
// token types where it has them, else ones and zeros (one segment).
std::vector<std::vector<int64_t>> make_feeds(const Encoding& encoding) {
  const std::vector<int64_t>& ids = encoding.at("input_ids");
  std::vector<std::vector<int64_t>> feeds;
  for (const char* name : graphport::kInputs) {
    const auto found = encoding.find(name);
    if (found != encoding.end()) feeds.push_back(found->second);
    else if (std::string(name) == "attention_mask") feeds.emplace_back(ids.size(), 1);
    else feeds.emplace_back(ids.size(), 0);  // token_type_ids
  }
  return feeds;
}

void print_json_string(const std::string& text) {
  std::cout << '"';
  for (char c : text) {
    if (c == '"' || c == '\\') std::cout << '\\';
    std::cout << c;
  }
  std::cout << '"';
}

void print_number(double value) {
  if (std::isfinite(value)) std::cout << value;
  else std::cout << "null";  // JSON has no NaN or infinity
}

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = GRAPHPORT_MODEL_DIR;
  std::string ids_text;
  std::string text;
  bool has_ids = false;
  bool has_text = false;
  bool timings = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (flag == "--timings") {
      timings = true;
    } else if (flag == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (flag == "--ids" && i + 1 < argc) {
      ids_text = argv[++i];
      has_ids = true;
    } else if (flag == "--text" && i + 1 < argc) {
      text = argv[++i];
      has_text = true;
    } else {
      std::cerr << "graphport_infer: unknown or incomplete option " << flag << "\n" << kUsage;
      return 2;
    }
  }
  if (has_ids == has_text) {
    std::cerr << "graphport_infer: pass either --text or --ids\n" << kUsage;
    return 2;
  }
  Encoding encoding;
  if (has_ids && !parse_ids(ids_text, &encoding["input_ids"])) {
    std::cerr << "graphport_infer: --ids takes comma-separated integers, such as "
                 "101,7592,2088,102\n"
              << kUsage;
    return 2;
  }
  if (has_text && graphport::Tokenizer::find(model_dir).empty()) {
    std::cerr << "graphport_infer: " << model_dir
              << " has no tokenizer graph (graphport deploy writes one where it can convert "
                 "the export's tokenizer, and says why where it cannot), so this deployment "
                 "takes --ids only.\n";
    return 2;
  }
  try {
    const auto load_start = std::chrono::steady_clock::now();
    graphport::Model model(model_dir);
    std::unique_ptr<graphport::Tokenizer> tokenizer;
    if (has_text) tokenizer = std::make_unique<graphport::Tokenizer>(model_dir);
    const double load_ms = milliseconds_since(load_start);
    const auto infer_start = std::chrono::steady_clock::now();
    if (has_text) encoding = tokenizer->encode(text);
    const std::vector<graphport::Output> outputs = model.run(make_feeds(encoding));
    const double infer_ms = milliseconds_since(infer_start);

    std::cout.precision(std::numeric_limits<float>::max_digits10);
    std::cout << "{";
    if (has_text) {
      std::cout << "\"input_ids\": [";
      const std::vector<int64_t>& ids = encoding.at("input_ids");
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? ", " : "") << ids[i];
      std::cout << "], ";
    }
    std::cout << "\"outputs\": {";
    for (size_t o = 0; o < outputs.size(); ++o) {
      std::cout << (o ? ", " : "");
      print_json_string(graphport::kOutputs[o]);
      std::cout << ": {\"shape\": [";
      for (size_t d = 0; d < outputs[o].shape.size(); ++d) {
        std::cout << (d ? ", " : "") << outputs[o].shape[d];
      }
      std::cout << "], \"head\": [";
      for (size_t i = 0; i < outputs[o].head.size(); ++i) {
        std::cout << (i ? ", " : "");
        print_number(outputs[o].head[i]);
      }
      std::cout << "]}";
    }
    std::cout << "}";
    if (timings) {
      std::cout << ", \"timings\": {\"load_ms\": " << load_ms << ", \"infer_ms\": " << infer_ms
                << "}";
    }
    std::cout << "}" << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "graphport_infer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
