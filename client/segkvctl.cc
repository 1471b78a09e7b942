// segkvctl: command-line client for segkvd.
//
//   segkvctl [--endpoint=127.0.0.1:7379] [--timeout=5s] [-w table|json]
//            COMMAND ARGS
//
// Exit status: 0 on success (including `get` of a missing key), 1 if an RPC
// failed (`segkvctl: <CODE>: <message>` on stderr), 2 on a usage error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/flag_check.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

ABSL_FLAG(std::string, endpoint, "127.0.0.1:7379", "segkvd address host:port");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline of each RPC");
ABSL_FLAG(std::string, w, "table", "output format: table or json");
ABSL_FLAG(std::optional<uint64_t>, expected_version, std::nullopt,
          "put/del: apply only if the key's current version equals this "
          "(0 = the key must not exist)");
ABSL_FLAG(std::string, prefix, "", "scan: only keys starting with this");
ABSL_FLAG(uint64_t, limit, 0, "scan: stop after this many items (0 = all)");
ABSL_FLAG(std::optional<uint32_t>, partition, std::nullopt,
          "segments: only this partition");
ABSL_FLAG(std::optional<double>, min_dead_ratio, std::nullopt,
          "compact: segments at least this dead (default: the server's "
          "--compaction_dead_ratio; 0 = any dead byte)");

namespace segkv::client {
namespace {

constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    "segkvctl [--endpoint=127.0.0.1:7379] [--timeout=5s] [-w table|json] "
    "COMMAND ARGS\n"
    "commands:\n"
    "  put KEY VALUE [--expected_version=N]\n"
    "  get KEY\n"
    "  del KEY [--expected_version=N]\n"
    "  scan [--prefix=P] [--limit=N]\n"
    "  status\n"
    "  segments [--partition=N]\n"
    "  sync\n"
    "  checkpoint   (run with a --timeout long enough to write the index)\n"
    "  compact [--min_dead_ratio=R]\n"
    "flags go before \"--\"; a KEY or VALUE that starts with '-' goes after it:\n"
    "  segkvctl put -- -key -value";

enum class Format { kTable, kJson };

// ---------------------------------------------------------------------------
// Output helpers.

bool IsPrintableAscii(absl::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

// Builds one flat JSON object, fields in insertion order.
class JsonObject {
 public:
  JsonObject& Str(absl::string_view key, absl::string_view value) {
    return Raw(key, JsonQuote(value));
  }
  // Printable ASCII as a string; anything else base64 under key + "_b64".
  JsonObject& Bytes(absl::string_view key, absl::string_view value) {
    if (IsPrintableAscii(value)) return Str(key, value);
    return Raw(absl::StrCat(key, "_b64"), JsonQuote(absl::Base64Escape(value)));
  }
  JsonObject& Uint(absl::string_view key, uint64_t value) {
    return Raw(key, absl::StrCat(value));
  }
  JsonObject& Int(absl::string_view key, int64_t value) {
    return Raw(key, absl::StrCat(value));
  }
  JsonObject& Double(absl::string_view key, double value) {
    return Raw(key, std::isfinite(value) ? absl::StrCat(value) : "null");
  }
  JsonObject& Bool(absl::string_view key, bool value) {
    return Raw(key, value ? "true" : "false");
  }
  std::string Build() const {
    return absl::StrCat("{", absl::StrJoin(fields_, ","), "}");
  }

 private:
  JsonObject& Raw(absl::string_view key, absl::string_view json) {
    fields_.push_back(absl::StrCat(JsonQuote(key), ":", json));
    return *this;
  }
  std::vector<std::string> fields_;
};

std::string JsonArray(const std::vector<JsonObject>& objects) {
  std::vector<std::string> parts;
  parts.reserve(objects.size());
  for (const JsonObject& o : objects) parts.push_back(o.Build());
  return absl::StrCat("[", absl::StrJoin(parts, ","), "]");
}

// Left-aligned columns separated by two spaces, header first.
class Table {
 public:
  explicit Table(std::vector<std::string> header) {
    rows_.push_back(std::move(header));
  }
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const {
    std::vector<size_t> widths;
    for (const auto& row : rows_) {
      if (widths.size() < row.size()) widths.resize(row.size(), 0);
      for (size_t i = 0; i < row.size(); ++i) {
        widths[i] = std::max(widths[i], row[i].size());
      }
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// How a bytes field appears in a table cell.
std::string CellBytes(absl::string_view b) {
  if (b.empty()) return "\"\"";
  if (IsPrintableAscii(b)) return std::string(b);
  return absl::StrCat("b64:", absl::Base64Escape(b));
}

std::string CellBool(bool b) { return b ? "true" : "false"; }

std::string CellTime(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// ---------------------------------------------------------------------------
// Commands. Each returns the RPC status; output goes to `out`.

struct Invocation {
  std::string command;
  std::vector<std::string> args;  // positional arguments after the command
  Format format = Format::kTable;
};

absl::Status CmdPut(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::PutResponse> r =
      c.Put(inv.args[0], inv.args[1], absl::GetFlag(FLAGS_expected_version));
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    out << JsonObject()
               .Uint("version", r->version())
               .Bool("existed", r->existed())
               .Uint("previous_version", r->previous_version())
               .Build()
        << "\n";
  } else {
    Table t({"VERSION", "EXISTED", "PREVIOUS_VERSION"});
    t.AddRow({absl::StrCat(r->version()), CellBool(r->existed()),
              absl::StrCat(r->previous_version())});
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdGet(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::GetResponse> r = c.Get(inv.args[0]);
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    JsonObject o;
    o.Bool("found", r->found());
    if (r->found()) o.Bytes("value", r->value()).Uint("version", r->version());
    out << o.Build() << "\n";
  } else if (!r->found()) {
    out << "(not found)\n";
  } else {
    Table t({"VALUE", "VERSION"});
    t.AddRow({CellBytes(r->value()), absl::StrCat(r->version())});
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdDel(Client& c, const Invocation& inv, std::ostream& out) {
  v1::DeleteRequest req;
  req.set_key(inv.args[0]);
  if (auto ev = absl::GetFlag(FLAGS_expected_version); ev.has_value()) {
    req.set_expected_version(*ev);
  }
  absl::StatusOr<v1::DeleteResponse> r = c.Delete(req);
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    out << JsonObject()
               .Bool("existed", r->existed())
               .Uint("previous_version", r->previous_version())
               .Uint("version", r->version())
               .Build()
        << "\n";
  } else {
    Table t({"EXISTED", "PREVIOUS_VERSION", "VERSION"});
    t.AddRow({CellBool(r->existed()), absl::StrCat(r->previous_version()),
              absl::StrCat(r->version())});
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdScan(Client& c, const Invocation& inv, std::ostream& out) {
  // The server caps a page at 10000 items.
  constexpr uint64_t kPage = 1000;
  const uint64_t limit = absl::GetFlag(FLAGS_limit);
  std::vector<v1::KeyValue> items;
  v1::ScanRequest req;
  req.set_prefix(absl::GetFlag(FLAGS_prefix));
  while (limit == 0 || items.size() < limit) {
    uint64_t want = kPage;
    if (limit != 0) want = std::min(want, limit - items.size());
    req.set_limit(static_cast<uint32_t>(want));
    absl::StatusOr<v1::ScanResponse> r = c.Scan(req);
    if (!r.ok()) return r.status();
    for (v1::KeyValue& kv : *r->mutable_items()) {
      if (limit != 0 && items.size() >= limit) break;
      items.push_back(std::move(kv));
    }
    if (r->next_cursor().empty()) break;
    req.set_cursor(r->next_cursor());
  }
  if (inv.format == Format::kJson) {
    std::vector<JsonObject> objs;
    for (const v1::KeyValue& kv : items) {
      objs.push_back(JsonObject()
                         .Bytes("key", kv.key())
                         .Bytes("value", kv.value())
                         .Uint("version", kv.version()));
    }
    out << JsonArray(objs) << "\n";
  } else {
    Table t({"KEY", "VALUE", "VERSION"});
    for (const v1::KeyValue& kv : items) {
      t.AddRow({CellBytes(kv.key()), CellBytes(kv.value()),
                absl::StrCat(kv.version())});
    }
    t.Print(out);
  }
  return absl::OkStatus();
}

// Every scalar field of a message under its proto name, so the JSON of
// `status` follows the proto as fields are added. Unset optional fields are
// left out.
JsonObject AllFields(const google::protobuf::Message& m) {
  using FD = google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  JsonObject o;
  for (int i = 0; i < d->field_count(); ++i) {
    const FD* f = d->field(i);
    if (f->is_repeated() || (f->has_presence() && !r->HasField(m, f))) continue;
    switch (f->cpp_type()) {
      case FD::CPPTYPE_UINT32: o.Uint(f->name(), r->GetUInt32(m, f)); break;
      case FD::CPPTYPE_UINT64: o.Uint(f->name(), r->GetUInt64(m, f)); break;
      case FD::CPPTYPE_INT32: o.Int(f->name(), r->GetInt32(m, f)); break;
      case FD::CPPTYPE_INT64: o.Int(f->name(), r->GetInt64(m, f)); break;
      case FD::CPPTYPE_DOUBLE: o.Double(f->name(), r->GetDouble(m, f)); break;
      case FD::CPPTYPE_FLOAT: o.Double(f->name(), r->GetFloat(m, f)); break;
      case FD::CPPTYPE_BOOL: o.Bool(f->name(), r->GetBool(m, f)); break;
      case FD::CPPTYPE_STRING:
        if (f->type() == FD::TYPE_BYTES) {
          o.Bytes(f->name(), r->GetString(m, f));
        } else {
          o.Str(f->name(), r->GetString(m, f));  // JSON-escaped, same key always
        }
        break;
      case FD::CPPTYPE_ENUM: o.Str(f->name(), r->GetEnum(m, f)->name()); break;
      case FD::CPPTYPE_MESSAGE: break;  // none in PartitionStatus
    }
  }
  return o;
}

absl::Status CmdStatus(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::StatusResponse> r = c.Status();
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    std::vector<JsonObject> objs;
    for (const v1::PartitionStatus& p : r->partitions()) {
      objs.push_back(AllFields(p));
    }
    out << JsonArray(objs) << "\n";
  } else {
    Table t({"PARTITION", "KEYS", "LIVE_BYTES", "DEAD_BYTES", "SEGMENTS",
             "QUEUE_DEPTH", "DURABILITY", "CHECKPOINT", "RECOVERED_FROM",
             "RECLAIMED", "ERROR"});
    for (const v1::PartitionStatus& p : r->partitions()) {
      t.AddRow({absl::StrCat(p.partition()), absl::StrCat(p.keys()),
                absl::StrCat(p.live_bytes()), absl::StrCat(p.dead_bytes()),
                absl::StrCat(p.segments()), absl::StrCat(p.queue_depth()),
                p.durability(),
                p.last_checkpoint_id() == 0 ? "-" : absl::StrCat(p.last_checkpoint_id()),
                p.recovered_from_checkpoint() == 0
                    ? "replay"
                    : absl::StrCat("checkpoint ", p.recovered_from_checkpoint()),
                absl::StrCat(p.bytes_reclaimed()),
                p.error().empty() ? "-" : p.error()});
    }
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdSegments(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::ListSegmentsResponse> r =
      c.ListSegments(absl::GetFlag(FLAGS_partition));
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    std::vector<JsonObject> objs;
    for (const v1::Segment& s : r->segments()) {
      objs.push_back(JsonObject()
                         .Uint("partition", s.partition())
                         .Uint("id", s.id())
                         .Bool("sealed", s.sealed())
                         .Uint("first_address", s.first_address())
                         .Uint("end_address", s.end_address())
                         .Uint("bytes", s.bytes())
                         .Uint("live_bytes", s.live_bytes())
                         .Uint("tombstone_bytes", s.tombstone_bytes())
                         .Double("dead_ratio", s.dead_ratio())
                         .Int("created_unix_ms", s.created_unix_ms())
                         .Int("sealed_unix_ms", s.sealed_unix_ms()));
    }
    out << JsonArray(objs) << "\n";
  } else {
    Table t({"PARTITION", "ID", "SEALED", "FIRST_ADDRESS", "END_ADDRESS",
             "BYTES", "LIVE_BYTES", "DEAD_RATIO", "CREATED", "SEALED_AT"});
    for (const v1::Segment& s : r->segments()) {
      t.AddRow({absl::StrCat(s.partition()), absl::StrCat(s.id()),
                CellBool(s.sealed()), absl::StrCat(s.first_address()),
                absl::StrCat(s.end_address()), absl::StrCat(s.bytes()),
                absl::StrCat(s.live_bytes()),
                s.sealed() ? absl::StrFormat("%.3f", s.dead_ratio()) : "-",
                CellTime(s.created_unix_ms()),
                CellTime(s.sealed_unix_ms())});
    }
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdSync(Client& c, const Invocation& inv, std::ostream& out) {
  absl::Status s = c.Sync();
  if (!s.ok()) return s;
  if (inv.format == Format::kJson) {
    out << JsonObject().Bool("ok", true).Build() << "\n";
  } else {
    out << "OK\n";
  }
  return absl::OkStatus();
}

absl::Status CmdCheckpoint(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::CheckpointResponse> r = c.Checkpoint();
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    std::vector<JsonObject> objs;
    for (const v1::PartitionCheckpoint& p : r->partitions()) {
      objs.push_back(JsonObject()
                         .Uint("partition", p.partition())
                         .Uint("id", p.id())
                         .Uint("covered_address", p.covered_address())
                         .Uint("bytes", p.bytes())
                         .Double("sync_ms", p.sync_ms())
                         .Double("copy_ms", p.copy_ms())
                         .Double("write_seconds", p.write_seconds()));
    }
    out << JsonArray(objs) << "\n";
  } else {
    Table t({"PARTITION", "CHECKPOINT", "COVERED_ADDRESS", "BYTES", "SYNC_MS",
             "COPY_MS", "WRITE_SECONDS"});
    for (const v1::PartitionCheckpoint& p : r->partitions()) {
      t.AddRow({absl::StrCat(p.partition()), absl::StrCat(p.id()),
                absl::StrCat(p.covered_address()), absl::StrCat(p.bytes()),
                absl::StrFormat("%.2f", p.sync_ms()),
                absl::StrFormat("%.2f", p.copy_ms()),
                absl::StrFormat("%.3f", p.write_seconds())});
    }
    t.Print(out);
  }
  return absl::OkStatus();
}

absl::Status CmdCompact(Client& c, const Invocation& inv, std::ostream& out) {
  absl::StatusOr<v1::CompactResponse> r = c.Compact(absl::GetFlag(FLAGS_min_dead_ratio));
  if (!r.ok()) return r.status();
  if (inv.format == Format::kJson) {
    std::vector<JsonObject> objs;
    for (const v1::PartitionCompaction& p : r->partitions()) {
      objs.push_back(JsonObject()
                         .Uint("partition", p.partition())
                         .Uint("segments_compacted", p.segments_compacted())
                         .Uint("bytes_reclaimed", p.bytes_reclaimed())
                         .Uint("records_relocated", p.records_relocated()));
    }
    out << JsonArray(objs) << "\n";
  } else {
    Table t({"PARTITION", "SEGMENTS_COMPACTED", "BYTES_RECLAIMED", "RECORDS_RELOCATED"});
    for (const v1::PartitionCompaction& p : r->partitions()) {
      t.AddRow({absl::StrCat(p.partition()), absl::StrCat(p.segments_compacted()),
                absl::StrCat(p.bytes_reclaimed()), absl::StrCat(p.records_relocated())});
    }
    t.Print(out);
  }
  return absl::OkStatus();
}

struct CommandSpec {
  const char* name;
  size_t nargs;
  absl::Status (*run)(Client&, const Invocation&, std::ostream&);
};

constexpr CommandSpec kCommands[] = {
    {"put", 2, CmdPut},       {"get", 1, CmdGet},
    {"del", 1, CmdDel},       {"scan", 0, CmdScan},
    {"status", 0, CmdStatus}, {"segments", 0, CmdSegments},
    {"sync", 0, CmdSync},     {"checkpoint", 0, CmdCheckpoint},
    {"compact", 0, CmdCompact},
};

// ---------------------------------------------------------------------------
// Command line.


absl::StatusOr<Invocation> ParseInvocation(
    const std::vector<char*>& positional) {
  Invocation inv;
  std::string w = absl::GetFlag(FLAGS_w);
  if (w == "table") {
    inv.format = Format::kTable;
  } else if (w == "json") {
    inv.format = Format::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("-w must be table or json, not \"", w, "\""));
  }
  if (absl::GetFlag(FLAGS_timeout) <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be > 0");
  }
  if (positional.size() < 2) {
    return absl::InvalidArgumentError("missing COMMAND");
  }
  inv.command = positional[1];
  inv.args.assign(positional.begin() + 2, positional.end());
  for (const CommandSpec& spec : kCommands) {
    if (inv.command != spec.name) continue;
    if (inv.args.size() != spec.nargs) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec.name, " takes ", spec.nargs, " argument(s), got ",
                       inv.args.size()));
    }
    return inv;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown command \"", inv.command, "\""));
}

int Run(const Invocation& inv) {
  ClientOptions options;
  options.endpoint = absl::GetFlag(FLAGS_endpoint);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  Client client(options);
  for (const CommandSpec& spec : kCommands) {
    if (inv.command != spec.name) continue;
    absl::Status s = spec.run(client, inv, std::cout);
    std::cout.flush();
    if (!s.ok()) {
      std::cerr << "segkvctl: " << absl::StatusCodeToString(s.code()) << ": "
                << s.message() << "\n";
      return kExitRpcError;
    }
    return 0;
  }
  return kExitUsage;  // unreachable: ParseInvocation checked the command
}

int UsageError(absl::string_view message) {
  std::cerr << "segkvctl: " << message << "\nusage: " << kUsage << "\n";
  return kExitUsage;
}

}  // namespace
}  // namespace segkv::client

int main(int argc, char** argv) {
  using segkv::client::UsageError;
  absl::SetProgramUsageMessage(segkv::client::kUsage);
  if (absl::Status s = segkv::client::CheckFlags(argc, argv, "w"); !s.ok()) {
    return UsageError(s.message());
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  absl::StatusOr<segkv::client::Invocation> inv =
      segkv::client::ParseInvocation(positional);
  if (!inv.ok()) return UsageError(inv.status().message());
  return segkv::client::Run(*inv);
}
