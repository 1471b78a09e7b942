#include "worker/record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/coding.h"
#include "worker/crc32c.h"

namespace segkv::worker {

using format::RecordType;

void EncodeRecordBody(RecordType type, absl::string_view key,
                      absl::string_view value, char* dst) {
  dst[format::kRecType] = static_cast<char>(type);
  dst[format::kRecFlags] = 0;
  EncodeFixed16(dst + format::kRecKeyLen, static_cast<uint16_t>(key.size()));
  EncodeFixed32(dst + format::kRecValueLen, static_cast<uint32_t>(value.size()));
  EncodeFixed32(dst + format::kRecReserved, 0);
  char* body = dst + format::kRecordHeaderSize;
  std::memcpy(body, key.data(), key.size());
  if (!value.empty()) std::memcpy(body + key.size(), value.data(), value.size());
}

void FinishRecord(uint64_t seq, uint64_t prev_address, uint64_t record_size,
                  char* dst) {
  EncodeFixed64(dst + format::kRecSeq, seq);
  EncodeFixed64(dst + format::kRecPrevAddress, prev_address);
  EncodeFixed32(dst + format::kRecCrc, crc32c::Value(dst + 4, record_size - 4));
}

void EncodeRecord(RecordType type, uint64_t seq, uint64_t prev_address,
                  absl::string_view key, absl::string_view value, char* dst) {
  EncodeRecordBody(type, key, value, dst);
  FinishRecord(seq, prev_address, RecordSize(key.size(), value.size()), dst);
}

bool DecodeRecordHeader(const char* p, uint64_t max_value_size,
                        RecordHeader* out) {
  const auto type = static_cast<RecordType>(p[format::kRecType]);
  if (type != RecordType::kPut && type != RecordType::kDelete) return false;
  if (p[format::kRecFlags] != 0) return false;
  if (DecodeFixed32(p + format::kRecReserved) != 0) return false;
  out->type = type;
  out->crc = DecodeFixed32(p + format::kRecCrc);
  out->key_len = DecodeFixed16(p + format::kRecKeyLen);
  out->value_len = DecodeFixed32(p + format::kRecValueLen);
  out->seq = DecodeFixed64(p + format::kRecSeq);
  out->prev_address = DecodeFixed64(p + format::kRecPrevAddress);
  if (out->key_len == 0 || out->key_len > format::kMaxKeySize) return false;
  if (out->value_len > max_value_size) return false;
  if (type == RecordType::kDelete && out->value_len != 0) return false;
  return out->seq != 0;
}

bool RecordCrcMatches(const char* p, const RecordHeader& h) {
  return crc32c::Value(p + 4, h.size() - 4) == h.crc;
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

std::string EncodeSegmentHeader(uint32_t partition, uint64_t segment_id,
                                uint64_t segment_size, int64_t created_ms,
                                uint64_t torn_window) {
  std::string h(format::kSegmentHeaderSize, '\0');
  std::memcpy(h.data() + format::kSegHdrMagic, format::kSegmentMagic, 8);
  EncodeFixed32(h.data() + format::kSegHdrVersion, format::kLogFormatVersion);
  EncodeFixed32(h.data() + format::kSegHdrPartition, partition);
  EncodeFixed64(h.data() + format::kSegHdrSegmentId, segment_id);
  EncodeFixed64(h.data() + format::kSegHdrSegmentSize, segment_size);
  EncodeFixed64(h.data() + format::kSegHdrCreatedMs,
                static_cast<uint64_t>(created_ms));
  EncodeFixed64(h.data() + format::kSegHdrTornWindow, torn_window);
  EncodeFixed32(h.data() + format::kSegHdrCrc,
                crc32c::Value(h.data(), format::kSegHdrCrc));
  return h;
}

uint64_t SegmentHeaderTornWindow(absl::string_view h) {
  return DecodeFixed64(h.data() + format::kSegHdrTornWindow);
}

absl::Status CheckSegmentHeader(absl::string_view h, absl::string_view path,
                                uint32_t partition, uint64_t segment_id,
                                uint64_t segment_size) {
  if (h.size() < format::kSegmentHeaderSize) {
    return absl::DataLossError(absl::StrCat(path, ": segment header truncated"));
  }
  if (std::memcmp(h.data(), format::kSegmentMagic, 8) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a segkv segment"));
  }
  if (DecodeFixed32(h.data() + format::kSegHdrCrc) !=
      crc32c::Value(h.data(), format::kSegHdrCrc)) {
    return absl::DataLossError(absl::StrCat(path, ": segment header CRC mismatch"));
  }
  const uint32_t version = DecodeFixed32(h.data() + format::kSegHdrVersion);
  if (version != format::kLogFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": log format version ", version, ", this build reads ",
        format::kLogFormatVersion));
  }
  const uint32_t p = DecodeFixed32(h.data() + format::kSegHdrPartition);
  const uint64_t id = DecodeFixed64(h.data() + format::kSegHdrSegmentId);
  const uint64_t size = DecodeFixed64(h.data() + format::kSegHdrSegmentSize);
  if (p != partition || id != segment_id || size != segment_size) {
    return absl::DataLossError(absl::StrCat(
        path, ": segment header says partition ", p, " segment ", id, " size ",
        size, "; expected partition ", partition, " segment ", segment_id,
        " size ", segment_size));
  }
  return absl::OkStatus();
}

}  // namespace segkv::worker
