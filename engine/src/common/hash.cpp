#include "common/hash.hpp"

#include <array>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <openssl/evp.h>

namespace runbookd {

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    // EVP_Digest only fails on allocation failure, which the rest of the daemon cannot survive
    // either.
    if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("sha256 failed: EVP_Digest returned an error");
    }
    std::string hex;
    hex.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        hex += fmt::format("{:02x}", digest[i]);
    }
    return hex;
}

void Fnv1a64::add(std::string_view data) {
    for (const char c : data) {
        add_byte(static_cast<std::uint8_t>(c));
    }
}

void Fnv1a64::add_byte(std::uint8_t byte) {
    state_ ^= byte;
    state_ *= 1099511628211ULL;
}

}  // namespace runbookd
