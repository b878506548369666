// Tokenizer::from_store: the tokenizer.ggml.* metadata of an opened model (TensorStore).
#include "format/tensor_store.h"
#include "tokenizer/vocab_meta.h"

namespace citadel {
namespace {

// Reads MetaValue's variant directly so that only TensorStore::meta() is needed.
std::optional<int64_t> value_int(const MetaValue& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return *u <= INT64_MAX ? std::optional<int64_t>(*u) : std::nullopt;
  if (const auto* i = std::get_if<int64_t>(&v.v)) return *i;
  if (const auto* b = std::get_if<bool>(&v.v)) return *b ? 1 : 0;
  return std::nullopt;
}
std::optional<double> value_num(const MetaValue& v) {
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  if (auto i = value_int(v)) return static_cast<double>(*i);
  return std::nullopt;
}

class StoreMeta : public tok::MetaSource {
 public:
  explicit StoreMeta(const TensorStore& s) : s_(s) {}
  std::optional<std::string> str(const std::string& key) const override {
    const MetaValue* v = s_.meta(key);
    const auto* p = v ? std::get_if<std::string>(&v->v) : nullptr;
    return p ? std::optional<std::string>(*p) : std::nullopt;
  }
  std::optional<int64_t> integer(const std::string& key) const override {
    const MetaValue* v = s_.meta(key);
    return v ? value_int(*v) : std::nullopt;
  }
  Result<bool> str_array(const std::string& key, std::vector<std::string>* out) const override {
    const MetaArray* a = array(key);
    if (!a) return false;
    out->clear();
    out->reserve(a->size());
    for (const MetaValue& e : *a) {
      const auto* p = std::get_if<std::string>(&e.v);
      if (!p) return InvalidArgument(key + ": expected an array of strings");
      out->push_back(*p);
    }
    return true;
  }
  Result<bool> num_array(const std::string& key, std::vector<double>* out) const override {
    const MetaArray* a = array(key);
    if (!a) return false;
    out->clear();
    out->reserve(a->size());
    for (const MetaValue& e : *a) {
      auto d = value_num(e);
      if (!d) return InvalidArgument(key + ": expected an array of numbers");
      out->push_back(*d);
    }
    return true;
  }

 private:
  const MetaArray* array(const std::string& key) const {
    const MetaValue* v = s_.meta(key);
    const auto* p = v ? std::get_if<std::shared_ptr<MetaArray>>(&v->v) : nullptr;
    return (p && *p) ? p->get() : nullptr;
  }
  const TensorStore& s_;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_store(const TensorStore& store) {
  StoreMeta meta(store);
  auto spec = tok::vocab_from_meta(meta);
  if (!spec.ok()) return spec.status().with_context(store.path());
  auto t = from_spec(std::move(spec).value());
  if (!t.ok()) return t.status().with_context(store.path());
  return t;
}

}  // namespace citadel
