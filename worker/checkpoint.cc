#include "worker/checkpoint.h"

#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/coding.h"
#include "worker/crc32c.h"

namespace segkv::worker {
namespace {

// docs/format/checkpoint.md, "Header".
constexpr char kMagic[8] = {'S', 'E', 'G', 'K', 'V', 'C', 'K', 'P'};
constexpr size_t kOffVersion = 8;
constexpr size_t kOffPartition = 12;
constexpr size_t kOffSegmentSize = 16;
constexpr size_t kOffId = 24;
constexpr size_t kOffCovered = 32;
constexpr size_t kOffNextVersion = 40;
constexpr size_t kOffCreatedMs = 48;
constexpr size_t kOffCount = 56;
constexpr size_t kOffNumBuckets = 64;
constexpr size_t kOffSplit = 72;
constexpr size_t kOffNodesUsed = 80;
constexpr size_t kOffFreeNodes = 88;
constexpr size_t kOffLevel = 96;
constexpr size_t kOffUsageCount = 104;
constexpr size_t kOffImageBytes = 112;
constexpr size_t kOffHeaderCrc = 124;
static_assert(kOffHeaderCrc + 4 == kCheckpointHeaderSize);
constexpr size_t kUsageEntrySizeV1 = 24;  // total, live, tombstone
constexpr size_t kUsageEntrySizeV2 = 32;  // segment id, total, live, tombstone
constexpr size_t kTrailerSize = 4;

size_t UsageEntrySize(uint32_t version) {
  return version == 1 ? kUsageEntrySizeV1 : kUsageEntrySizeV2;
}

uint64_t ImageBytes(const HashIndex::Geometry& g) {
  return g.num_buckets * sizeof(HashIndex::Bucket) +
         g.nodes_used * sizeof(HashIndex::Node) + g.free_nodes * sizeof(uint32_t);
}

}  // namespace

uint64_t CountUsageEntries(const SegmentUsageTable& usage) {
  uint64_t n = 0;
  usage.ForEach([&](uint64_t, const SegmentUsage& u) { n += !u.empty(); });
  return n;
}

uint64_t CheckpointFileSize(const CheckpointHeader& h) {
  return kCheckpointHeaderSize + ImageBytes(h.geometry) +
         h.usage_count * UsageEntrySize(h.version) + kTrailerSize;
}

void BuildCheckpoint(CheckpointHeader* h, const HashIndex& index,
                     const SegmentUsageTable& usage, char* out) {
  h->geometry = index.geometry();
  // Version 1 (tests of reading old files) has an entry per id from 0.
  h->usage_count = h->version == 1 ? usage.end_id() : CountUsageEntries(usage);
  std::memset(out, 0, kCheckpointHeaderSize);
  std::memcpy(out, kMagic, 8);
  EncodeFixed32(out + kOffVersion, h->version);
  EncodeFixed32(out + kOffPartition, h->partition);
  EncodeFixed64(out + kOffSegmentSize, h->segment_size);
  EncodeFixed64(out + kOffId, h->id);
  EncodeFixed64(out + kOffCovered, h->covered_address);
  EncodeFixed64(out + kOffNextVersion, h->next_version);
  EncodeFixed64(out + kOffCreatedMs, static_cast<uint64_t>(h->created_ms));
  EncodeFixed64(out + kOffCount, h->geometry.count);
  EncodeFixed64(out + kOffNumBuckets, h->geometry.num_buckets);
  EncodeFixed64(out + kOffSplit, h->geometry.split);
  EncodeFixed64(out + kOffNodesUsed, h->geometry.nodes_used);
  EncodeFixed64(out + kOffFreeNodes, h->geometry.free_nodes);
  EncodeFixed32(out + kOffLevel, h->geometry.level);
  EncodeFixed64(out + kOffUsageCount, h->usage_count);
  EncodeFixed64(out + kOffImageBytes, ImageBytes(h->geometry));
  EncodeFixed32(out + kOffHeaderCrc, crc32c::Value(out, kOffHeaderCrc));
  char* p = out + kCheckpointHeaderSize;
  index.CopyImage(p);
  p += ImageBytes(h->geometry);
  for (uint64_t id = h->version == 1 ? 0 : usage.begin_id(); id < usage.end_id(); ++id) {
    const SegmentUsage u = usage.Get(id);
    if (h->version != 1) {
      if (u.empty()) continue;
      EncodeFixed64(p, id);
      p += 8;
    }
    EncodeFixed64(p, u.total_bytes);
    EncodeFixed64(p + 8, u.live_bytes);
    EncodeFixed64(p + 16, u.tombstone_bytes);
    p += kUsageEntrySizeV1;
  }
}

uint32_t SealCheckpoint(char* file, uint64_t size) {
  const uint32_t crc = crc32c::Value(file + kCheckpointHeaderSize,
                                     size - kCheckpointHeaderSize - kTrailerSize);
  EncodeFixed32(file + size - kTrailerSize, crc);
  return crc;
}

absl::StatusOr<LoadedCheckpoint> ParseCheckpoint(absl::string_view data,
                                                 absl::string_view path,
                                                 bool check_body) {
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, ": ", why));
  };
  const char* p = data.data();
  if (data.size() < kCheckpointHeaderSize + kTrailerSize) return corrupt("truncated");
  if (std::memcmp(p, kMagic, 8) != 0) return corrupt("bad magic");
  if (DecodeFixed32(p + kOffHeaderCrc) != crc32c::Value(p, kOffHeaderCrc)) {
    return corrupt("header CRC mismatch");
  }
  const uint32_t version = DecodeFixed32(p + kOffVersion);
  if (version != 1 && version != 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", path, ": format version ", version,
                     ", this build reads 1 and 2"));
  }
  LoadedCheckpoint c;
  CheckpointHeader& h = c.header;
  h.version = version;
  h.partition = DecodeFixed32(p + kOffPartition);
  h.segment_size = DecodeFixed64(p + kOffSegmentSize);
  h.id = DecodeFixed64(p + kOffId);
  h.covered_address = DecodeFixed64(p + kOffCovered);
  h.next_version = DecodeFixed64(p + kOffNextVersion);
  h.created_ms = static_cast<int64_t>(DecodeFixed64(p + kOffCreatedMs));
  h.geometry.count = DecodeFixed64(p + kOffCount);
  h.geometry.num_buckets = DecodeFixed64(p + kOffNumBuckets);
  h.geometry.split = DecodeFixed64(p + kOffSplit);
  h.geometry.nodes_used = DecodeFixed64(p + kOffNodesUsed);
  h.geometry.free_nodes = DecodeFixed64(p + kOffFreeNodes);
  h.geometry.level = DecodeFixed32(p + kOffLevel);
  h.usage_count = DecodeFixed64(p + kOffUsageCount);
  const uint64_t image_bytes = DecodeFixed64(p + kOffImageBytes);
  // Bound every count before multiplying so a wild value cannot overflow.
  if (h.geometry.num_buckets > data.size() || h.geometry.nodes_used > data.size() ||
      h.geometry.free_nodes > data.size() || h.usage_count > data.size() ||
      image_bytes != ImageBytes(h.geometry) ||
      CheckpointFileSize(h) != data.size()) {
    return corrupt(absl::StrCat("file is ", data.size(),
                                " bytes, which does not match its header"));
  }
  const uint64_t body = data.size() - kCheckpointHeaderSize - kTrailerSize;
  c.stored_crc = DecodeFixed32(p + data.size() - kTrailerSize);
  if (check_body) {
    c.body_crc = crc32c::Value(p + kCheckpointHeaderSize, body);
    if (c.body_crc != c.stored_crc) return corrupt("body CRC mismatch");
  }
  c.image = data.substr(kCheckpointHeaderSize, image_bytes);
  c.usage_bytes = data.substr(kCheckpointHeaderSize + image_bytes, body - image_bytes);
  const char* u = p + kCheckpointHeaderSize + image_bytes;
  // Version 2: segment ids strictly increasing, none past the segment the
  // covered address is in (which also bounds the table built from them).
  const uint64_t max_id =
      h.segment_size == 0 ? 0 : h.covered_address / h.segment_size;
  uint64_t next_id = 0;  // the lowest id the next entry may name
  for (uint64_t i = 0; i < h.usage_count; ++i) {
    uint64_t id = i;
    if (version != 1) {
      id = DecodeFixed64(u);
      u += 8;
      if (id > max_id || id < next_id) {
        return corrupt(absl::StrCat("segment usage entry for segment ", id,
                                    " is out of order or past the covered address"));
      }
    }
    SegmentUsage e;
    e.total_bytes = DecodeFixed64(u);
    e.live_bytes = DecodeFixed64(u + 8);
    e.tombstone_bytes = DecodeFixed64(u + 16);
    if (e.live_bytes + e.tombstone_bytes > e.total_bytes) {
      return corrupt("segment usage exceeds its total");
    }
    if (!e.empty()) c.usage.At(id) = e;
    next_id = id + 1;
    u += kUsageEntrySizeV1;
  }
  return c;
}

CheckpointBuffer::CheckpointBuffer(uint64_t size) {
  if (size == 0) return;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) return;
  // Touch every page: under virtualisation even populated pages can fault
  // on first write, and the point is that the copy never does.
  std::memset(p, 0, size);
  data_ = static_cast<char*>(p);
  capacity_ = size;
}

CheckpointBuffer::~CheckpointBuffer() {
  if (data_ != nullptr) munmap(data_, capacity_);
}

}  // namespace segkv::worker
