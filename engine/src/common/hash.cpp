#include "common/hash.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <stdexcept>
#include <string_view>

#include <openssl/evp.h>

namespace runbookd {

std::string base64(std::string_view data) {
    std::string out(4 * ((data.size() + 2) / 3), '\0');
    if (data.empty()) {
        return out;
    }
    // EVP_EncodeBlock takes an int length; excerpts are kilobytes, but stay safe for any size.
    std::size_t in = 0;
    std::size_t written = 0;
    constexpr std::size_t kChunk = 3 * (1 << 20);
    while (in < data.size()) {
        const std::size_t n = std::min(kChunk, data.size() - in);
        const int w = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                      reinterpret_cast<const unsigned char*>(data.data() + in),
                                      static_cast<int>(n));
        written += static_cast<std::size_t>(w);
        in += n;
    }
    out.resize(written);
    return out;
}

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    // EVP_Digest only fails on allocation failure, which the rest of the daemon cannot survive
    // either.
    if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("sha256 failed: EVP_Digest returned an error");
    }
    // Hashed for every audit event on the store's writer thread: no formatting call per byte.
    constexpr std::string_view kDigits = "0123456789abcdef";
    std::string hex(length * 2, '0');
    for (unsigned int i = 0; i < length; ++i) {
        hex[2 * i] = kDigits[digest[i] >> 4];
        hex[2 * i + 1] = kDigits[digest[i] & 0x0f];
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
