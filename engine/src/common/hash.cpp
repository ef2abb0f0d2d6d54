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

namespace {

// The implementation is fetched from OpenSSL's provider once, and each thread keeps one
// context: EVP_Digest with EVP_sha256() looks the implementation up and allocates a context on
// every call, and the store's writer hashes every audit event.
const EVP_MD* sha256_md() {
    static EVP_MD* const fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
}

struct DigestContext {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    DigestContext() = default;
    DigestContext(const DigestContext&) = delete;
    DigestContext& operator=(const DigestContext&) = delete;
    ~DigestContext() { EVP_MD_CTX_free(ctx); }
};

}  // namespace

std::string sha256_hex(std::string_view data) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    thread_local DigestContext context;
    // These only fail on allocation failure, which the rest of the daemon cannot survive
    // either.
    if (context.ctx == nullptr || EVP_DigestInit_ex2(context.ctx, sha256_md(), nullptr) != 1 ||
        EVP_DigestUpdate(context.ctx, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(context.ctx, digest.data(), &length) != 1) {
        throw std::runtime_error("sha256 failed: OpenSSL returned an error");
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
