# SPDX-License-Identifier: MIT
# bash completion for vmadm(8). Commands and options are read from
# `vmadm --help`, so new commands complete without a change here; VM ids,
# connection ids, user names, group ids, OS ids and request ids come from the
# daemon (when it answers).

_vmadm_commands() {
        "$1" --help 2>/dev/null | awk '/^Commands:/ { f = 1; next }
                f && /^  [a-z]/ { print $1 } f && /^$/ { exit }'
}

# The subcommands of a command word (user, group, os, request).
_vmadm_subcommands() {
        "$1" help "$2" 2>/dev/null | awk '/^Subcommands:/ { f = 1; next }
                f && /^  [a-z]/ { print $1 } f && /^$/ { exit }'
}

# The words of a table's first column, skipping its header (and "(no VMs)").
_vmadm_column() {
        "${@}" --no-color 2>/dev/null | awk 'NR > 1 && $1 !~ /^\(/ { print $1 }'
}

# VM ids: _vmadm_vms PROG [--socket PATH]
_vmadm_vms() {
        _vmadm_column "$@" list
}

_vmadm() {
        local cur prev words cword
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        local prog=${COMP_WORDS[0]}
        local global_opts="-s --socket -j --json --no-color --timeout -h --help -V --version"

        # the command is the first word that is not an option or its value
        local i cmd="" sub="" nargs=0 sock=()
        for ((i = 1; i < COMP_CWORD; i++)); do
                case ${COMP_WORDS[i]} in
                -s|--socket) sock=(--socket "${COMP_WORDS[i+1]}"); ((i++)) ;;
                --timeout) ((i++)) ;;
                -*) ;;
                *) cmd=${COMP_WORDS[i]}; break ;;
                esac
        done
        # then the subcommand, and how many arguments precede the cursor
        for ((i++; i < COMP_CWORD; i++)); do
                case ${COMP_WORDS[i]} in
                -s|--socket|--timeout|--limit|--group|--hours|--minutes|--for|--user|--vm|\
                --owner|--hostname|--ip|--os|--ram|--cpu|--disk|--iso|--qcow2|--description|\
                --state|--since|--types|--booked-by|--status|--count|--role|--session)
                        ((i++)) ;;
                -*) ;;
                *)
                        case $cmd in
                        user|group|os|request) [[ -z $sub ]] && sub=${COMP_WORDS[i]} && continue ;;
                        esac
                        ((nargs++)) ;;
                esac
        done

        case $prev in
        -s|--socket)
                COMPREPLY=($(compgen -f -- "$cur"))
                return
                ;;
        --timeout|--limit|--hours|--minutes|--hostname|--ip|--ram|--cpu|--disk|--iso|\
        --qcow2|--description|--since|--count|--session)
                return
                ;;
        --role)
                COMPREPLY=($(compgen -W "viewer user admin" -- "$cur"))
                return
                ;;
        --state)
                COMPREPLY=($(compgen -W "pending approved rejected cancelled" -- "$cur"))
                return
                ;;
        --status)
                COMPREPLY=($(compgen -W "on off requested" -- "$cur"))
                return
                ;;
        --types)
                COMPREPLY=($(compgen -W "vm. session. auth. conn. user. group. booking. os.
                        request. events." -- "$cur"))
                return
                ;;
        --for|--user|--owner|--booked-by)
                COMPREPLY=($(compgen -W "$(_vmadm_column "$prog" "${sock[@]}" user list)" -- "$cur"))
                return
                ;;
        --vm)
                COMPREPLY=($(compgen -W "$(_vmadm_vms "$prog" "${sock[@]}")" -- "$cur"))
                return
                ;;
        --group)
                COMPREPLY=($(compgen -W "$(_vmadm_column "$prog" "${sock[@]}" group list)" -- "$cur"))
                return
                ;;
        --os)
                [[ $cmd == request ]] &&
                        COMPREPLY=($(compgen -W "$(_vmadm_column "$prog" "${sock[@]}" os list)" -- "$cur"))
                return
                ;;
        esac

        if [[ -z $cmd ]]; then
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$(_vmadm_commands "$prog")" -- "$cur"))
                fi
                return
        fi
        case $cmd in
        user|group|os|request)
                if [[ -z $sub ]]; then
                        [[ $cur == -* ]] && COMPREPLY=($(compgen -W "$global_opts" -- "$cur")) ||
                                COMPREPLY=($(compgen -W "$(_vmadm_subcommands "$prog" "$cmd")" -- "$cur"))
                        return
                fi
                ;;
        esac

        local opts="" args=""
        case $cmd in
        list)     opts="--limit --group --owner --booked-by --status"
                  args="connected authorized all" ;;
        disks|clients) opts="--limit" ;;
        sessions) opts="--limit --user"; args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        show|delete|approve|suspend|monitor|cancel)
                  [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        create)   opts="--password-stdin" ;;
        passwd)   opts="--password-stdin"; [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        set)      opts="--owner --hostname --ip --os --group --ram --cpu --disk"
                  [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        book)     opts="--group --hours --minutes --for"
                  [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        renew)    opts="--hours --minutes"; [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        bookings) opts="--user --group --limit" ;;
        history)  opts="--user --vm --limit" ;;
        watch)    opts="--since --types" ;;
        revoke)   opts="--session --user"; args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
        kick)     args=$(_vmadm_column "$prog" "${sock[@]}" clients) ;;
        user)
                case $sub in
                add) opts="--role --password-stdin" ;;
                list) opts="--limit" ;;
                set) opts="--role --password-stdin --new-password" ;;
                esac
                case $sub in
                show|set|del) [[ $nargs == 0 ]] &&
                        args=$(_vmadm_column "$prog" "${sock[@]}" user list) ;;
                esac
                ;;
        group)
                case $sub in
                list) opts="--limit" ;;
                rm) opts="--group"; [[ $nargs == 0 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
                add) [[ $nargs -ge 1 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ;;
                put) [[ $nargs -ge 1 ]] && args=$(_vmadm_vms "$prog" "${sock[@]}") ||
                        args=$(_vmadm_column "$prog" "${sock[@]}" group list) ;;
                show|rename|del) [[ $nargs == 0 ]] &&
                        args=$(_vmadm_column "$prog" "${sock[@]}" group list) ;;
                esac
                ;;
        os)
                case $sub in
                add) opts="--iso --qcow2 --description" ;;
                del) args=$(_vmadm_column "$prog" "${sock[@]}" os list) ;;
                esac
                ;;
        request)
                case $sub in
                add) opts="--ram --cpu --disk --os --count" ;;
                list) opts="--state --limit" ;;
                approve|reject|cancel) [[ $nargs == 0 ]] &&
                        args=$(_vmadm_column "$prog" "${sock[@]}" request list --state pending) ;;
                esac
                [[ $sub == approve && $nargs -ge 1 ]] && args=""
                ;;
        backup)
                opts="--force"
                if [[ $cur != -* ]]; then
                        COMPREPLY=($(compgen -f -- "$cur"))
                        return
                fi
                ;;
        help)
                if [[ $nargs == 0 ]]; then
                        args=$(_vmadm_commands "$prog")
                elif [[ $nargs == 1 ]]; then
                        args=$(_vmadm_subcommands "$prog" "${COMP_WORDS[COMP_CWORD-1]}")
                fi
                ;;
        esac
        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$opts $global_opts" -- "$cur"))
        else
                COMPREPLY=($(compgen -W "$args" -- "$cur"))
        fi
}
complete -F _vmadm vmadm
