// Raises the signal numbered argv[1] with its default action.
#include <csignal>
#include <cstdlib>

int main(int argc, char** argv) {
    const int sig = argc > 1 ? std::atoi(argv[1]) : SIGTERM;
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return 0;
}
