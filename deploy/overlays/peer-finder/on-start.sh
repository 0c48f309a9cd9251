#!/bin/sh
# peer-finder's on-start hook: the peers on stdin, one FQDN per line, in
# StatefulSet ordinal order (web-0 first) and ending with a newline. Writes
# nginx's config: the leader (the first peer) answers with its own host
# name, every other pod proxies to the leader. The same job as the base's
# nginx.conf.j2, the way a pre-peerplate StatefulSet did it.
set -eu
leader=""
while read -r peer; do
  [ -n "$leader" ] || leader="$peer"
done
me="${HOSTNAME%%.*}"   # kubelet sets HOSTNAME to the pod name
if [ -z "$leader" ] || [ "${leader%%.*}" = "$me" ]; then
  location="return 200 \"$me\\n\";"
else
  resolver=""
  while read -r key value _; do
    [ "$key" = nameserver ] || continue
    case "$value" in
      *%*) ;;                                        # link-local with a zone: not for nginx
      *:*) resolver="$resolver [$value]" ;;          # IPv6, as nginx writes it
      *) resolver="$resolver $value" ;;
    esac
  done < /etc/resolv.conf
  location="set \$leader \"$leader\"; proxy_pass http://\$leader:8080;"
fi
tmp="/conf/nginx.conf.tmp"
cat > "$tmp" <<CONF
pid /tmp/nginx.pid;
error_log stderr;
events {}
http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  ${resolver:+resolver$resolver valid=5s;}
  server {
    listen 8080;
    location / { $location }
  }
}
CONF
mv "$tmp" /conf/nginx.conf
echo "on-start: leader $leader, wrote /conf/nginx.conf" >&2
