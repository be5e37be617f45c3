/* Forced into every C file of the Windows cross-build (tools/windows/cross-build) when the
 * mingw-w64 headers are older than version 11: ggml-cpu.c asks Windows not to throttle its
 * threads with THREAD_POWER_THROTTLING_STATE, which mingw-w64 10 (Debian 12) does not declare.
 * The layout is Windows' own (processthreadsapi.h in the Windows SDK). */
#ifndef MATE_MINGW_COMPAT_H
#define MATE_MINGW_COMPAT_H
typedef struct _THREAD_POWER_THROTTLING_STATE {
    unsigned long Version;
    unsigned long ControlMask;
    unsigned long StateMask;
} THREAD_POWER_THROTTLING_STATE;
#define THREAD_POWER_THROTTLING_CURRENT_VERSION 1
#define THREAD_POWER_THROTTLING_EXECUTION_SPEED 0x1
#endif
