#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace runbookd {

// Lower-case hex SHA-256 of `data`, used for delivery bodies and runbook content hashes.
std::string sha256_hex(std::string_view data);

// Standard base64 (RFC 4648, with padding) of `data`.
std::string base64(std::string_view data);

// 64-bit FNV-1a, the hash Prometheus uses for label-set fingerprints.
class Fnv1a64 {
  public:
    void add(std::string_view data);
    void add_byte(std::uint8_t byte);
    std::uint64_t value() const { return state_; }

  private:
    std::uint64_t state_ = 14695981039346656037ULL;
};

}  // namespace runbookd
