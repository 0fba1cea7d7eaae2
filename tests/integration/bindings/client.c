/* A small GNOME-side client of btrfsd, built on the proxies gdbus-codegen generates from
 * the shipped introspection XML (tests/integration/test_bindings.py builds and runs it).
 *
 *   client [SOURCE DESTINATION]
 *
 * Lists the filesystems (object path, Uuid property, mount points) on the system bus
 * ($DBUS_SYSTEM_BUS_ADDRESS), then, given SOURCE and DESTINATION, snapshots SOURCE there
 * on the filesystem that holds it (Manager.ResolvePath) and prints "created PATH".
 * Exits 1 with the D-Bus error on stderr when a call fails. */
#include <stdio.h>
#include <glib.h>
#include "btrfsd-generated.h"

static int fail(const char *what, GError *error)
{
    fprintf(stderr, "%s: %s\n", what, error ? error->message : "failed");
    g_clear_error(&error);
    return 1;
}

static GVariant *no_options(void)
{
    return g_variant_new("a{sv}", NULL);
}

int main(int argc, char **argv)
{
    GError *error = NULL;
    GDBusConnection *bus = g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, &error);
    if (!bus)
        return fail("connect", error);

    BtrfsdManager *manager = btrfsd_manager_proxy_new_sync(
        bus, G_DBUS_PROXY_FLAGS_NONE, "org.btrfsd1", "/org/btrfsd1", NULL, &error);
    if (!manager)
        return fail("Manager proxy", error);
    printf("version %s\n", btrfsd_manager_get_version(manager));

    gchar **filesystems = NULL;
    if (!btrfsd_manager_call_get_filesystems_sync(manager, no_options(), &filesystems, NULL,
                                                  &error))
        return fail("GetFilesystems", error);
    for (gchar **p = filesystems; *p; p++) {
        BtrfsdFilesystem *fs = btrfsd_filesystem_proxy_new_sync(
            bus, G_DBUS_PROXY_FLAGS_NONE, "org.btrfsd1", *p, NULL, &error);
        if (!fs)
            return fail("Filesystem proxy", error);
        const gchar *const *mounts = btrfsd_filesystem_get_mount_points(fs);
        gchar *joined = mounts ? g_strjoinv(",", (gchar **)mounts) : g_strdup("");
        printf("fs %s %s %s\n", *p, btrfsd_filesystem_get_uuid(fs), joined);
        g_free(joined);
        g_object_unref(fs);
    }
    g_strfreev(filesystems);

    if (argc == 3) {
        gchar *fs_path = NULL, *subvolume = NULL, *created = NULL;
        if (!btrfsd_manager_call_resolve_path_sync(manager, argv[1], no_options(), &fs_path,
                                                   &subvolume, NULL, &error))
            return fail("ResolvePath", error);
        BtrfsdFilesystem *fs = btrfsd_filesystem_proxy_new_sync(
            bus, G_DBUS_PROXY_FLAGS_NONE, "org.btrfsd1", fs_path, NULL, &error);
        if (!fs)
            return fail("Filesystem proxy", error);
        if (!btrfsd_filesystem_call_create_snapshot_sync(fs, argv[1], argv[2], no_options(),
                                                         &created, NULL, &error))
            return fail("CreateSnapshot", error);
        printf("created %s\n", created);
        g_free(created);
        g_free(fs_path);
        g_free(subvolume);
        g_object_unref(fs);
    }
    g_object_unref(manager);
    g_object_unref(bus);
    return 0;
}
