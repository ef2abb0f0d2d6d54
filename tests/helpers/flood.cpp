// Writes argv[1] bytes (default 1 GiB) of a repeating pattern to stdout as fast as it can.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <unistd.h>

int main(int argc, char** argv) {
    std::uint64_t left = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (1ULL << 30);
    std::vector<char> block(1 << 16);
    for (std::size_t i = 0; i < block.size(); ++i) {
        block[i] = static_cast<char>('a' + i % 26);
    }
    while (left > 0) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size()));
        const ssize_t written = ::write(1, block.data(), n);
        if (written <= 0) {
            return 1;
        }
        left -= static_cast<std::uint64_t>(written);
    }
    return 0;
}
