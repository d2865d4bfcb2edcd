#include <systemd/sd-daemon.h>
#include <systemd/sd-bus.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Small C helpers over libsystemd for what Swift cannot call comfortably (char ***, varargs,
// cleanup of what libsystemd allocates). Every name is prefixed `csystemd_`.

/// sd_listen_fds_with_names(unset_environment = 1): the number of descriptors passed (from
/// SD_LISTEN_FDS_START), their names joined by ':' into `names` (NUL-terminated, truncated to
/// `cap`), or a negative errno. The descriptors are CLOEXEC, and LISTEN_* are removed from the
/// environment, so workers do not see them.
static inline int csystemd_listen_fds(char *names, size_t cap) {
    char **list = NULL;
    int n = sd_listen_fds_with_names(1, &list);
    if (cap > 0) names[0] = 0;
    if (n > 0 && list && cap > 0) {
        size_t used = 0;
        for (int i = 0; i < n && list[i]; i++) {
            size_t len = strlen(list[i]);
            if (used + len + 2 > cap) break;
            if (i > 0) names[used++] = ':';
            memcpy(names + used, list[i], len);
            used += len;
            names[used] = 0;
        }
    }
    if (list) {
        for (char **p = list; *p; p++) free(*p);
        free(list);
    }
    return n;
}

/// sd_pid_notify_with_fds(0, 0, state, fds, n).
static inline int csystemd_notify_with_fds(const char *state, const int *fds, unsigned n) {
    return sd_pid_notify_with_fds(0, 0, state, fds, n);
}

/// What systemd says of the unit this process belongs to: the type of the job queued on it
/// ("stop", "restart", ...; "" when none) and its FileDescriptorStoreMax=. Asks systemd directly on
/// its private socket as root (which also works where no D-Bus daemon runs), else over the system
/// bus (systemd answers these reads to any user). Each call waits at most `timeout_usec`. 0, or a negative errno.
static inline int csystemd_unit_query(uint32_t pid, uint64_t timeout_usec, char *job_type, size_t job_type_cap,
                                      uint32_t *fd_store_max) {
    static const char *dest = "org.freedesktop.systemd1";
    sd_bus *bus = NULL;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    char *unit_path = NULL, *job_path = NULL, *type = NULL;
    int r;
    if (job_type_cap > 0) job_type[0] = 0;
    *fd_store_max = 0;

    if (geteuid() == 0 && access("/run/systemd/private", W_OK) == 0) {
        r = sd_bus_new(&bus);
        if (r >= 0) r = sd_bus_set_address(bus, "unix:path=/run/systemd/private");
        if (r >= 0) r = sd_bus_start(bus);
        if (r < 0) bus = sd_bus_flush_close_unref(bus);
    }
    if (!bus) {
        r = sd_bus_open_system(&bus);
        if (r < 0) goto done;
    }
    sd_bus_set_method_call_timeout(bus, timeout_usec);

    r = sd_bus_call_method(bus, dest, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "GetUnitByPID",
                           &error, &reply, "u", pid);
    if (r < 0) goto done;
    const char *path = NULL;
    r = sd_bus_message_read(reply, "o", &path);
    if (r < 0) goto done;
    unit_path = strdup(path);
    reply = sd_bus_message_unref(reply);
    if (!unit_path) { r = -ENOMEM; goto done; }

    r = sd_bus_get_property_trivial(bus, dest, unit_path, "org.freedesktop.systemd1.Service", "FileDescriptorStoreMax",
                                    &error, 'u', fd_store_max);
    if (r < 0) { *fd_store_max = 0; sd_bus_error_free(&error); }

    r = sd_bus_get_property(bus, dest, unit_path, "org.freedesktop.systemd1.Unit", "Job", &error, &reply, "(uo)");
    if (r < 0) goto done;
    uint32_t job_id = 0;
    const char *jp = NULL;
    r = sd_bus_message_read(reply, "(uo)", &job_id, &jp);
    if (r < 0) goto done;
    if (job_id == 0) { r = 0; goto done; }
    job_path = strdup(jp);
    if (!job_path) { r = -ENOMEM; goto done; }
    r = sd_bus_get_property_string(bus, dest, job_path, "org.freedesktop.systemd1.Job", "JobType", &error, &type);
    if (r < 0) goto done;
    if (job_type_cap > 0) {
        strncpy(job_type, type, job_type_cap - 1);
        job_type[job_type_cap - 1] = 0;
    }
    r = 0;
done:
    free(type);
    free(job_path);
    free(unit_path);
    sd_bus_message_unref(reply);
    sd_bus_error_free(&error);
    sd_bus_flush_close_unref(bus);
    return r;
}
