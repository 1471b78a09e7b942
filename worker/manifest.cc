#include "worker/manifest.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/coding.h"
#include "worker/crc32c.h"

namespace segkv::worker {
namespace {

// docs/format/manifest.md
constexpr char kMagic[8] = {'S', 'K', 'V', 'M', 'A', 'N', 'I', 'F'};
constexpr size_t kHeaderSizeV2 = 32;  // versions 1 and 2
constexpr size_t kHeaderSize = 40;    // version 3: + version floor
constexpr size_t kEntrySize = 40;
constexpr size_t kCheckpointEntrySize = 48;
constexpr uint32_t kFlagSealed = 1;

}  // namespace

std::string EncodeManifest(const Manifest& m) {
  std::string out;
  out.reserve(kHeaderSize + m.segments.size() * kEntrySize + 4);
  out.append(kMagic, 8);
  PutFixed32(&out, kManifestVersion);
  PutFixed32(&out, m.partition);
  PutFixed64(&out, m.segment_size);
  PutFixed32(&out, static_cast<uint32_t>(m.segments.size()));
  PutFixed32(&out, static_cast<uint32_t>(m.checkpoints.size()));
  PutFixed64(&out, m.version_floor);
  for (const SegmentInfo& s : m.segments) {
    PutFixed64(&out, s.id);
    PutFixed32(&out, s.sealed ? kFlagSealed : 0);
    PutFixed32(&out, 0);  // reserved
    // The active segment's length is found by scanning it; the MANIFEST
    // says 0 (Log::Segments() reports its bytes so far, for status).
    PutFixed64(&out, s.sealed ? s.end_offset : 0);
    PutFixed64(&out, static_cast<uint64_t>(s.created_ms));
    PutFixed64(&out, static_cast<uint64_t>(s.sealed_ms));
  }
  for (const CheckpointInfo& c : m.checkpoints) {
    PutFixed64(&out, c.id);
    PutFixed64(&out, c.covered_address);
    PutFixed64(&out, c.next_version);
    PutFixed64(&out, c.file_size);
    PutFixed64(&out, static_cast<uint64_t>(c.created_ms));
    PutFixed32(&out, c.crc);
    PutFixed32(&out, 0);  // reserved
  }
  PutFixed32(&out, crc32c::Value(out));
  return out;
}

absl::StatusOr<Manifest> DecodeManifest(absl::string_view data,
                                        absl::string_view path) {
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("manifest ", path, ": ", why));
  };
  if (data.size() < kHeaderSizeV2 + 4) return corrupt("truncated");
  if (std::memcmp(data.data(), kMagic, 8) != 0) return corrupt("bad magic");
  const char* p = data.data();
  if (DecodeFixed32(p + data.size() - 4) !=
      crc32c::Value(p, data.size() - 4)) {
    return corrupt("CRC mismatch");
  }
  const uint32_t version = DecodeFixed32(p + 8);
  if (version != 1 && version != 2 && version != kManifestVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("manifest ", path, ": version ", version,
                     ", this build reads ", kManifestVersion));
  }
  Manifest m;
  m.partition = DecodeFixed32(p + 12);
  m.segment_size = DecodeFixed64(p + 16);
  const uint32_t count = DecodeFixed32(p + 24);
  // Version 1 has a reserved zero where version 2 counts checkpoints.
  const uint32_t checkpoints = DecodeFixed32(p + 28);
  if (version == 1 && checkpoints != 0) return corrupt("reserved field set");
  const size_t header = version >= 3 ? kHeaderSize : kHeaderSizeV2;
  if (data.size() != header + uint64_t{count} * kEntrySize +
                         uint64_t{checkpoints} * kCheckpointEntrySize + 4) {
    return corrupt("length does not match the segment and checkpoint counts");
  }
  if (version >= 3) m.version_floor = DecodeFixed64(p + 32);
  if (count == 0) return corrupt("no segments");
  for (uint32_t i = 0; i < count; ++i) {
    const char* e = p + header + i * kEntrySize;
    SegmentInfo s;
    s.id = DecodeFixed64(e);
    const uint32_t flags = DecodeFixed32(e + 8);
    s.sealed = (flags & kFlagSealed) != 0;
    s.end_offset = DecodeFixed64(e + 16);
    s.created_ms = static_cast<int64_t>(DecodeFixed64(e + 24));
    s.sealed_ms = static_cast<int64_t>(DecodeFixed64(e + 32));
    if (flags & ~kFlagSealed) return corrupt("unknown segment flags");
    if (!m.segments.empty() && s.id <= m.segments.back().id) {
      return corrupt("segment ids not ascending");
    }
    const bool last = i + 1 == count;
    if (s.sealed == last) {
      return corrupt("only the last segment may be (and must be) active");
    }
    if (s.sealed && s.end_offset > m.segment_size) {
      return corrupt(absl::StrCat("segment ", s.id, " ends past the segment size"));
    }
    m.segments.push_back(s);
  }
  for (uint32_t i = 0; i < checkpoints; ++i) {
    const char* e = p + header + uint64_t{count} * kEntrySize +
                    uint64_t{i} * kCheckpointEntrySize;
    CheckpointInfo c;
    c.id = DecodeFixed64(e);
    c.covered_address = DecodeFixed64(e + 8);
    c.next_version = DecodeFixed64(e + 16);
    c.file_size = DecodeFixed64(e + 24);
    c.created_ms = static_cast<int64_t>(DecodeFixed64(e + 32));
    c.crc = DecodeFixed32(e + 40);
    if (!m.checkpoints.empty() && c.id <= m.checkpoints.back().id) {
      return corrupt("checkpoint ids not ascending");
    }
    m.checkpoints.push_back(c);
  }
  return m;
}

std::string SegmentFileName(uint64_t id) {
  return absl::StrFormat("seg-%020u.log", id);
}

namespace {

bool ParseNumberedName(absl::string_view name, absl::string_view prefix,
                       absl::string_view suffix, uint64_t* id) {
  if (name.size() != prefix.size() + 20 + suffix.size() ||
      name.substr(0, prefix.size()) != prefix ||
      name.substr(prefix.size() + 20) != suffix) {
    return false;
  }
  const absl::string_view digits = name.substr(prefix.size(), 20);
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(digits, id);
}

}  // namespace

bool ParseSegmentFileName(absl::string_view name, uint64_t* id) {
  return ParseNumberedName(name, "seg-", ".log", id);
}

std::string CheckpointFileName(uint64_t id) {
  return absl::StrFormat("ckpt-%020u.idx", id);
}

bool ParseCheckpointFileName(absl::string_view name, uint64_t* id) {
  return ParseNumberedName(name, "ckpt-", ".idx", id);
}

}  // namespace segkv::worker
