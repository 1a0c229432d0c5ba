/* A process that sees a smaller CPU: enginebench/measure/cpuid_mask.py builds this and preloads it
   (LD_PRELOAD) into the processes a narrowed ENGINEBENCH_CPU_FEATURES starts.

   Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID 0) makes every CPUID instruction of this process raise
   SIGSEGV. The handler below runs the real CPUID, clears the bits ENGINEBENCH_CPUID_CLEAR names and returns
   past the instruction, so every library that picks its kernels from CPUID (ONNX Runtime's MLAS, OpenVINO's
   plugin, torch's cpuinfo, numpy, clang's -march=native) picks the smaller CPU's. The setting is per thread,
   inherited by threads and children, and reset by execve: LD_PRELOAD sets it again in each new program.

   SIGSEGV stays the program's: sigaction() and signal() are wrapped so that the handler a program installs
   (Python's faulthandler) is kept aside and called for every fault that is not a CPUID. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define MAX_RULES 32

struct rule { uint32_t leaf, subleaf; int any_subleaf, reg; uint32_t clear; };
static struct rule rules[MAX_RULES];
static int n_rules, active;
static unsigned long faults;
static struct sigaction theirs; /* the SIGSEGV disposition the program asked for */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static long set_cpuid(unsigned long enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void handler(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    /* a faulting CPUID is a general-protection fault (SI_KERNEL); a bad address or a jump to one is not,
       and its instruction may not be readable */
    if (active && info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)g[REG_RAX], subleaf = (uint32_t)g[REG_RCX], r[4];
        set_cpuid(1);
        __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(subleaf));
        set_cpuid(0);
        for (int i = 0; i < n_rules; i++)
            if (rules[i].leaf == leaf && (rules[i].any_subleaf || rules[i].subleaf == subleaf))
                r[rules[i].reg] &= ~rules[i].clear;
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
        return;
    }
    struct sigaction program = theirs;
    if (program.sa_handler == SIG_DFL || program.sa_handler == SIG_IGN) {
        /* a real fault and no handler of the program's: the instruction faults again and the process dies of
           it as it would have without this library */
        struct sigaction dfl = {0};
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
        return;
    }
    if (program.sa_flags & SA_RESETHAND) theirs.sa_handler = SIG_DFL;
    if (program.sa_flags & SA_SIGINFO) program.sa_sigaction(sig, info, context);
    else program.sa_handler(sig);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    if (!active) return real_sigaction(sig, act, old);
    if (sig != SIGSEGV) {
        /* another signal's handler runs with SIGSEGV open: a CPUID in it must reach the handler above */
        struct sigaction open_act;
        if (act) {
            open_act = *act;
            sigdelset(&open_act.sa_mask, SIGSEGV);
        }
        return real_sigaction(sig, act ? &open_act : NULL, old);
    }
    if (old) *old = theirs;
    if (act) theirs = *act;
    return 0;
}

/* A thread that blocks SIGSEGV (thread pools block every signal) and then runs CPUID would be killed: the
   kernel delivers a blocked synchronous fault as the default action. Blocking it never held off a fault
   anyway, so SIGSEGV stays open in every mask a program sets. */
static const sigset_t *without_segv(int how, const sigset_t *set, sigset_t *copy) {
    if (!active || !set || how == SIG_UNBLOCK) return set;
    *copy = *set;
    sigdelset(copy, SIGSEGV);
    return copy;
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
    static int (*real)(int, const sigset_t *, sigset_t *);
    if (!real) real = (int (*)(int, const sigset_t *, sigset_t *))dlsym(RTLD_NEXT, "pthread_sigmask");
    sigset_t copy;
    return real(how, without_segv(how, set, &copy), old);
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
    static int (*real)(int, const sigset_t *, sigset_t *);
    if (!real) real = (int (*)(int, const sigset_t *, sigset_t *))dlsym(RTLD_NEXT, "sigprocmask");
    sigset_t copy;
    return real(how, without_segv(how, set, &copy), old);
}

sighandler_t signal(int sig, sighandler_t handler_) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler_;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

/* for enginebench/measure/cpuid_mask.py: whether this process runs masked, and how many CPUIDs it answered */
int enginebench_cpuid_mask_active(void) { return active; }
unsigned long enginebench_cpuid_mask_faults(void) { return faults; }

/* ENGINEBENCH_CPUID_CLEAR="leaf.subleaf.register=mask,..." in hex, subleaf * for any: "7.0.ebx=d0230000" */
static void parse(const char *text) {
    char *copy = strdup(text), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n_rules < MAX_RULES; tok = strtok_r(NULL, ",", &save)) {
        char sub[16], reg[8];
        unsigned leaf, mask;
        if (sscanf(tok, "%x.%15[^.].%7[^=]=%x", &leaf, sub, reg, &mask) != 4) continue;
        struct rule *r = &rules[n_rules];
        r->leaf = leaf;
        r->any_subleaf = sub[0] == '*';
        r->subleaf = r->any_subleaf ? 0 : (uint32_t)strtoul(sub, NULL, 16);
        r->reg = !strcmp(reg, "eax") ? 0 : !strcmp(reg, "ebx") ? 1 : !strcmp(reg, "ecx") ? 2 : !strcmp(reg, "edx") ? 3 : -1;
        r->clear = mask;
        if (r->reg >= 0) n_rules++;
    }
    free(copy);
}

__attribute__((constructor)) static void start(void) {
    const char *text = getenv("ENGINEBENCH_CPUID_CLEAR");
    real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    if (!text || !*text || !real_sigaction) return;
    parse(text);
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = handler;
    /* on the thread's own stack, never an alternate one: OpenVINO's CPU plugin sets one per plugin object and
       restores them out of order, leaving a freed one in place, where a trap of this CPUID would kill the process
       (a stack overflow is then a plain death, without the program's handler) */
    ours.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&ours.sa_mask);
    if (real_sigaction(SIGSEGV, &ours, &theirs) != 0) return;
    active = 1;
    if (set_cpuid(0) != 0) { /* no CPUID faulting on this CPU or kernel: the process runs unmasked */
        active = 0;
        real_sigaction(SIGSEGV, &theirs, NULL);
    }
}
