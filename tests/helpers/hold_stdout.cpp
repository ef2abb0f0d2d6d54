// Forks a grandchild that keeps stdout open and sleeps; writes its pid to argv[1]; exits 0.
#include <cstdio>

#include <unistd.h>

int main(int argc, char** argv) {
    if (argc < 2) {
        return 2;
    }
    const pid_t child = ::fork();
    if (child < 0) {
        return 1;
    }
    if (child == 0) {
        while (true) {
            ::pause();
        }
    }
    std::FILE* out = std::fopen(argv[1], "w");
    if (out == nullptr) {
        return 1;
    }
    std::fprintf(out, "%d\n", static_cast<int>(child));
    std::fclose(out);
    return 0;
}
