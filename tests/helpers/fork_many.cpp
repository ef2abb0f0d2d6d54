// Forks argv[1] children (default 50) that sleep, writes their pids one per line to argv[2],
// then sleeps itself.
#include <cstdio>
#include <cstdlib>

#include <unistd.h>

int main(int argc, char** argv) {
    if (argc < 3) {
        return 2;
    }
    const int count = std::atoi(argv[1]);
    std::FILE* out = std::fopen(argv[2], "w");
    if (out == nullptr) {
        return 1;
    }
    for (int i = 0; i < count; ++i) {
        const pid_t child = ::fork();
        if (child < 0) {
            return 1;
        }
        if (child == 0) {
            while (true) {
                ::pause();
            }
        }
        std::fprintf(out, "%d\n", static_cast<int>(child));
    }
    std::fclose(out);
    while (true) {
        ::pause();
    }
}
