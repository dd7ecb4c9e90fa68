/*
 * die.h: how jobgroup's C programs report a failure on stderr (the shim,
 * local/shim.c, the node helper, local/nodehost.c, and the Slurm node agent,
 * slurm/agent.c).
 *
 * Contract for the including file: it defines `static const char *prog` (its
 * name, as each message begins) before including this header, and includes
 * <stdarg.h>, <stdio.h> and <stdlib.h>. Each program keeps its own exit codes
 * (the shim's 125/126, the agent's 1): they pass theirs to die().
 *
 * Included as "../die.h" so a compile in place needs no -I; jobgroup's build
 * (local/shim.py, `_build`) copies this file beside the copy of the source it
 * compiles, and its cache key hashes this file's content with the source's.
 */

#ifndef JOBGROUP_DIE_H
#define JOBGROUP_DIE_H

/* "PROG: MESSAGE\n" on stderr. */
static void vwarn(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* vwarn's message, then exit(code). */
__attribute__((noreturn, format(printf, 2, 3)))
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
    exit(code);
}

#endif
