#!/bin/bash
# Shared helpers for the role steps. Every helper is idempotent: it looks before it changes,
# so running a step twice changes nothing the second time (no appends, no restarts, no
# re-creates). File paths go through $ROOT so tests can run a step on a scratch root.
# shellcheck disable=SC2034  # CHANGED is read by the steps that source this file

set -euo pipefail

ROOT=${ROOT:-}
CHANGED=0

# The node's configuration, rendered by the service for this node (the report's configrc).
if [ -z "${NODE_HOSTNAME:-}" ] && [ -r "$ROOT/etc/provisioner/config.env" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/etc/provisioner/config.env"
fi

say() { printf '%s\n' "$*"; }

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

# ini_set PATH SECTION KEY VALUE: set one key in an INI file, adding the section if needed.
ini_set() {
    local path="$ROOT$1" section=$2 key=$3 value=$4 tmp
    mkdir -p "$(dirname "$path")"
    [ -f "$path" ] || : > "$path"
    tmp=$(mktemp)
    awk -v section="$section" -v key="$key" -v value="$value" '
        function flush() { if (in_section && !done) { print key " = " value; done = 1 } }
        /^\[.*\][ \t]*$/ {
            flush()
            in_section = ($0 == "[" section "]")
            if (in_section) seen = 1
            print; next
        }
        in_section && !done && $0 ~ "^[ \t]*#?[ \t]*" key "[ \t]*=" {
            if ($0 ~ "^[ \t]*#") { print; next }
            print key " = " value; done = 1; next
        }
        { print }
        END {
            flush()
            if (!seen) { print ""; print "[" section "]"; print key " = " value }
        }' "$path" > "$tmp"
    _replace_if_changed "$tmp" "$path" "set [$section] $key in $1"
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

# pkg_install PACKAGE...: install what is not installed yet.
pkg_install() {
    local missing=() p
    for p in "$@"; do
        rpm -q "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        dnf install -y "${missing[@]}"
    fi
}

# service_on UNIT...: enable and start, each only if not already so.
service_on() {
    local unit
    for unit in "$@"; do
        systemctl is-enabled -q "$unit" 2>/dev/null || systemctl enable "$unit"
        systemctl is-active -q "$unit" 2>/dev/null || systemctl start "$unit"
    done
}

# restart_if_changed UNIT...: a configuration step restarts its service only if it changed it.
restart_if_changed() {
    local unit
    if [ "$CHANGED" = 1 ]; then
        for unit in "$@"; do
            if systemctl is-active -q "$unit" 2>/dev/null; then
                systemctl restart "$unit"
            fi
        done
    fi
}

# firewall_allow SERVICE-OR-PORT...: open what a service needs, permanently and now.
firewall_allow() {
    local item changed=0
    for item in "$@"; do
        if [[ $item == */* ]]; then
            firewall-cmd -q --permanent --query-port="$item" || { firewall-cmd -q --permanent --add-port="$item"; changed=1; }
        else
            firewall-cmd -q --permanent --query-service="$item" || { firewall-cmd -q --permanent --add-service="$item"; changed=1; }
        fi
    done
    if [ "$changed" = 1 ]; then
        firewall-cmd -q --reload
    fi
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

# keystone_authtoken FILE USER PASSWORD: the [keystone_authtoken] section every service needs.
keystone_authtoken() {
    local file=$1 user=$2 password=$3
    ini_set "$file" keystone_authtoken www_authenticate_uri "http://$CONTROLLER_HOST:5000"
    ini_set "$file" keystone_authtoken auth_url "http://$CONTROLLER_HOST:5000"
    ini_set "$file" keystone_authtoken memcached_servers "$CONTROLLER_HOST:11211"
    ini_set "$file" keystone_authtoken auth_type password
    ini_set "$file" keystone_authtoken project_domain_name Default
    ini_set "$file" keystone_authtoken user_domain_name Default
    ini_set "$file" keystone_authtoken project_name service
    ini_set "$file" keystone_authtoken username "$user"
    ini_set "$file" keystone_authtoken password "$password"
}
