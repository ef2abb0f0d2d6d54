// Ignores SIGTERM, prints its pid and sleeps until killed.
#include <csignal>
#include <cstdio>

#include <unistd.h>

int main() {
    std::signal(SIGTERM, SIG_IGN);
    std::printf("%d\n", static_cast<int>(::getpid()));
    std::fflush(stdout);
    while (true) {
        ::pause();
    }
}
