#!/bin/bash
# Shared helpers for the role steps. Every helper is idempotent: it looks before it changes,
# so running a step twice changes nothing the second time (no appends, no restarts, no
# re-creates). File paths go through $ROOT so tests can run a step on a scratch root.
# shellcheck disable=SC2034  # CHANGED and the profile's names are read by the steps that source this file

set -euo pipefail

ROOT=${ROOT:-}
CHANGED=0

# The node's configuration, rendered by the service for this node (the report's configrc).
if [ -z "${NODE_HOSTNAME:-}" ] && [ -r "$ROOT/etc/provisioner/config.env" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/etc/provisioner/config.env"
fi

say() { printf '%s\n' "$*"; }

# skip REASON: what this step does cannot run on this node; say why and stop, changing nothing.
# The runner reports the step with this output, first line "skipped: REASON" (never faked as done).
skip() {
    say "skipped: $*"
    exit 0
}

# The OS profile the service names for this node (PROFILE in config.env): package, unit and path
# names, and the steps that do not apply on that OS. The steps speak in the profile's vocabulary.
: "${PROFILE:?the configuration in config.env names no OS profile}"
_hooks=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -r "$_hooks/profiles/$PROFILE.env" ]; then
    say "no OS profile $PROFILE under $_hooks/profiles" >&2
    exit 1
fi
# shellcheck source=../profiles/centos-stream-9.env
. "$_hooks/profiles/$PROFILE.env"
STEP_ID="$(basename "$(dirname "$0")")/$(basename "$0" .sh)"
case " $SKIP_STEPS " in
    *" $STEP_ID "*)
        skip "$STEP_ID does not apply on $PROFILE" ;;
esac

# write_file PATH MODE: content on stdin; rewritten only if it differs.
write_file() {
    local path="$ROOT$1" mode=$2 tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    install -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    CHANGED=1
    say "wrote $1"
}

# _replace_if_changed NEW PATH MESSAGE: put NEW's content into PATH (same inode, same mode) if it differs.
_replace_if_changed() {
    if cmp -s "$1" "$2"; then
        rm -f "$1"
    else
        cat "$1" > "$2"
        rm -f "$1"
        CHANGED=1
        say "$3"
    fi
}

# ini_set PATH SECTION KEY VALUE: set one key in an INI file (crudini, packaged on both OSes),
# written only when it differs so a second run leaves the file and its mtime alone.
ini_set() {
    local path="$ROOT$1" section=$2 key=$3 value=$4 current
    if [ -z "$section" ]; then
        say "ini_set $1 $key: no section; use kv_set for files without sections" >&2
        return 1
    fi
    mkdir -p "$(dirname "$path")"
    [ -f "$path" ] || : > "$path"
    if ! current=$(crudini --get "$path" "$section" "$key" 2>/dev/null) || [ "$current" != "$value" ]; then
        crudini --set "$path" "$section" "$key" "$value"
        CHANGED=1
        say "set [$section] $key in $1"
    fi
}

# kv_set PATH KEY VALUE: a `key = value` line in a file without sections (libvirt's *.conf):
# INI sections there are a syntax error.
kv_set() {
    line_in_file "$1" "^[[:space:]]*$2[[:space:]]*=" "$2 = $3"
}

# line_in_file PATH REGEX LINE: replace the line matching REGEX, or add LINE at the end.
line_in_file() {
    local path="$ROOT$1" regex=$2 line=$3 tmp
    mkdir -p "$(dirname "$path")"
    [ -f "$path" ] || : > "$path"
    tmp=$(mktemp)
    awk -v regex="$regex" -v line="$line" '
        $0 ~ regex { if (!done) print line; done = 1; next }
        { print }
        END { if (!done) print line }' "$path" > "$tmp"
    _replace_if_changed "$tmp" "$path" "set a line in $1"
}

# pkg_install PACKAGE...: install what is not installed yet, with the profile's package manager.
# An argument may be a profile's list ("$PKGS_GLUSTER"): its words are the packages.
pkg_install() {
    local missing=() p pkgs
    read -ra pkgs <<< "$*"
    for p in "${pkgs[@]}"; do
        case $PKG_FORMAT in
            rpm) rpm -q "$p" >/dev/null 2>&1 || missing+=("$p") ;;
            deb) dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p") ;;
        esac
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        case $PKG_FORMAT in
            rpm) dnf install -y "${missing[@]}" ;;
            deb) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ;;
        esac
    fi
}

# service_on UNIT...: enable and start, each only if not already so (words of a profile list too).
service_on() {
    local unit units
    read -ra units <<< "$*"
    for unit in "${units[@]}"; do
        systemctl is-enabled -q "$unit" 2>/dev/null || systemctl enable "$unit"
        systemctl is-active -q "$unit" 2>/dev/null || systemctl start "$unit"
    done
}

# restart_if_changed UNIT...: a configuration step restarts its service only if it changed it.
restart_if_changed() {
    local unit units
    read -ra units <<< "$*"
    if [ "$CHANGED" = 1 ]; then
        for unit in "${units[@]}"; do
            if systemctl is-active -q "$unit" 2>/dev/null; then
                systemctl restart "$unit"
            fi
        done
    fi
}

# install_zone: the firewalld zone of the install NIC. The gateway moves it into `internal`;
# every port the cluster needs is opened there, not in the default zone it no longer uses.
install_zone() {
    local zone
    zone=$(firewall-cmd --permanent --get-zone-of-interface="$NODE_INTERFACE" 2>/dev/null) \
        || zone=$(firewall-cmd --get-default-zone)
    printf '%s\n' "$zone"
}

# firewall_allow SERVICE-OR-PORT...: open what a service needs on the install network,
# permanently and now. Services must be firewalld's own (a package's service file may not be
# installed yet: INVALID_SERVICE); the steps open explicit ports otherwise.
firewall_allow() {
    local item changed=0 zone
    zone=$(install_zone)
    for item in "$@"; do
        if [[ $item == */* ]]; then
            firewall-cmd -q --permanent --zone="$zone" --query-port="$item" \
                || { firewall-cmd -q --permanent --zone="$zone" --add-port="$item"; changed=1; }
        else
            firewall-cmd -q --permanent --zone="$zone" --query-service="$item" \
                || { firewall-cmd -q --permanent --zone="$zone" --add-service="$item"; changed=1; }
        fi
    done
    if [ "$changed" = 1 ]; then
        firewall-cmd -q --reload
    fi
}

# selinux_http_port PORT...: let httpd bind an OpenStack API port under enforcing SELinux
# (openstack-selinux labels most; checked, not assumed). Nothing where the profile has no SELinux.
selinux_http_port() {
    local port ports
    [ "$SELINUX" = 1 ] || return 0
    ports=$(semanage port -l | awk '$1 == "http_port_t" && $2 == "tcp"')
    for port in "$@"; do
        if ! printf '%s\n' "$ports" | grep -Eq "[ ,]$port(,|$)"; then
            if semanage port -l | awk '$2 == "tcp"' | grep -Eq "[ ,]$port(,|$)"; then
                semanage port -m -t http_port_t -p tcp "$port"
            else
                semanage port -a -t http_port_t -p tcp "$port"
            fi
        fi
    done
}

# mysql_database NAME USER PASSWORD: database and its user, created only if absent.
mysql_database() {
    local db=$1 user=$2 password=$3
    if [ -z "$(mysql -N -e "SHOW DATABASES LIKE '$db'")" ]; then
        mysql -e "CREATE DATABASE $db"
    fi
    if [ -z "$(mysql -N -e "SELECT User FROM mysql.user WHERE User = '$user' AND Host = '%'")" ]; then
        mysql -e "CREATE USER '$user'@'%' IDENTIFIED BY '$password'; CREATE USER '$user'@'localhost' IDENTIFIED BY '$password'; GRANT ALL PRIVILEGES ON $db.* TO '$user'@'%'; GRANT ALL PRIVILEGES ON $db.* TO '$user'@'localhost'"
    fi
}

# openstack_exists TYPE NAME [ARGS...]: does the object exist (admin credentials from the env)?
openstack_exists() {
    local type=$1 name=$2
    shift 2
    openstack "$type" show "$@" "$name" >/dev/null 2>&1
}

# admin_env: the admin credentials (what the report's configrc exported).
admin_env() {
    export OS_USERNAME=admin OS_PASSWORD="$KEYSTONE_ADMIN_PASSWORD" OS_PROJECT_NAME=admin \
        OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
        OS_AUTH_URL="http://$CONTROLLER_HOST:5000/v3" OS_IDENTITY_API_VERSION=3
}

# ovs_datapath: Open vSwitch's datapath here. The kernel's (system) where the kernel has its
# module or can load it, as on every real host; else OVS's userspace datapath (netdev), e.g. in a
# container on a host kernel built without openvswitch. 08-openstack-compute/05 decides once and
# writes it into the agent's configuration; later steps read it there (ovs_bridge).
ovs_datapath() {
    if lsmod | grep -q '^openvswitch ' || modprobe openvswitch 2>/dev/null; then
        printf 'system\n'
    else
        printf 'netdev\n'
    fi
}

# ovs_configured_datapath: the datapath 08-openstack-compute/05 told the agent about.
ovs_configured_datapath() {
    local dp
    dp=$(crudini --get "$ROOT/etc/neutron/plugins/ml2/openvswitch_agent.ini" ovs datapath_type 2>/dev/null || true)
    printf '%s\n' "${dp:-system}"
}

# ovs_userspace_unit: where the agent runs on the userspace datapath, ovs-vswitchd is started
# directly instead of through ovs-ctl, whose start fails when it cannot load the kernel module
# (ovs-kmod-ctl insert) even though no bridge here needs it. Nothing on the kernel's datapath.
ovs_userspace_unit() {
    local run=/var/run/openvswitch
    [ "$(ovs_configured_datapath)" = netdev ] || return 0
    write_file /etc/systemd/system/ovs-vswitchd.service.d/userspace.conf 0644 <<CONF
[Service]
ExecStart=
ExecStart=/usr/sbin/ovs-vswitchd unix:$run/db.sock -vconsole:emer -vsyslog:err -vfile:info --no-chdir --log-file=/var/log/openvswitch/ovs-vswitchd.log --pidfile=$run/ovs-vswitchd.pid --detach
ExecReload=
CONF
    if [ "$CHANGED" = 1 ]; then
        systemctl daemon-reload
    fi
}

# ovs_bridge NAME: an Open vSwitch bridge on the datapath the agent was configured with, made
# only if absent (the agent stops at start if a bridge in bridge_mappings is missing).
ovs_bridge() {
    local name=$1 dp current
    dp=$(ovs_configured_datapath)
    if ! ovs-vsctl br-exists "$name"; then
        ovs-vsctl add-br "$name" -- set bridge "$name" "datapath_type=$dp"
        return 0
    fi
    current=$(ovs-vsctl get bridge "$name" datapath_type | tr -d '"')
    if [ "${current:-system}" != "$dp" ]; then      # unset is the kernel's
        ovs-vsctl set bridge "$name" "datapath_type=$dp"
    fi
}

# nova_service_sections FILE: how Nova reaches Placement and Neutron (controller and compute alike).
nova_service_sections() {
    local file=$1 section
    for section in placement neutron; do
        ini_set "$file" "$section" region_name RegionOne
        ini_set "$file" "$section" project_domain_name Default
        ini_set "$file" "$section" user_domain_name Default
        ini_set "$file" "$section" project_name service
        ini_set "$file" "$section" auth_type password
    done
    ini_set "$file" placement auth_url "http://$CONTROLLER_HOST:5000/v3"
    ini_set "$file" placement username placement
    ini_set "$file" placement password "$PLACEMENT_PASSWORD"
    ini_set "$file" neutron auth_url "http://$CONTROLLER_HOST:5000"
    ini_set "$file" neutron username neutron
    ini_set "$file" neutron password "$NEUTRON_PASSWORD"
}

# nova_service_user FILE: the 2025.1 Nova guides' [service_user] (controller and compute): Nova
# sends its own token with the user's, so a user's expired token cannot fail a long operation
# and other services can tell Nova's calls from a user's (OSSA-2023-003).
nova_service_user() {
    local file=$1
    ini_set "$file" service_user send_service_user_token true
    ini_set "$file" service_user auth_url "http://$CONTROLLER_HOST:5000/v3"
    ini_set "$file" service_user auth_type password
    ini_set "$file" service_user project_domain_name Default
    ini_set "$file" service_user user_domain_name Default
    ini_set "$file" service_user project_name service
    ini_set "$file" service_user username nova
    ini_set "$file" service_user password "$NOVA_PASSWORD"
}

# keystone_authtoken FILE USER PASSWORD: the [keystone_authtoken] section every service needs.
keystone_authtoken() {
    local file=$1 user=$2 password=$3
    ini_set "$file" keystone_authtoken www_authenticate_uri "http://$CONTROLLER_HOST:5000"
    ini_set "$file" keystone_authtoken auth_url "http://$CONTROLLER_HOST:5000"
    ini_set "$file" keystone_authtoken memcached_servers "$CONTROLLER_HOST:11211"
    ini_set "$file" keystone_authtoken auth_type password
    # Keystone's bootstrap names the region RegionOne; Debian's packaged configurations say
    # regionOne, and the middleware then finds no identity endpoint (every request a 500)
    ini_set "$file" keystone_authtoken region_name RegionOne
    ini_set "$file" keystone_authtoken project_domain_name Default
    ini_set "$file" keystone_authtoken user_domain_name Default
    ini_set "$file" keystone_authtoken project_name service
    # the region keystone-manage bootstrap names (Debian's packaged files say regionOne, which
    # the catalog then lacks)
    ini_set "$file" keystone_authtoken region_name RegionOne
    ini_set "$file" keystone_authtoken username "$user"
    ini_set "$file" keystone_authtoken password "$password"
}

# skip_part WHAT REASON: a part of a step that cannot run on this host (the rest of the step
# does), said in the step's output with the reason; never done halfway, never pretended. A step
# none of which can run uses skip, and is reported skipped.
skip_part() {
    say "skipped: $1: $2"
}

# cinder_backend_unavailable: why Cinder's LVM back end cannot run here, or nothing if it can.
# Its volume group needs the kernel's device-mapper (/proc/misc lists it once dm_mod is in);
# the kickstart's LVM layout loads it on a real host, a container on a kernel without it has none.
cinder_backend_unavailable() {
    if ! grep -qw device-mapper "$ROOT/proc/misc" 2>/dev/null; then
        printf 'the kernel has no device-mapper, so volume group %s cannot exist\n' "$CINDER_VG"
    fi
}
