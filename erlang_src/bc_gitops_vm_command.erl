%%% @doc The command line, environment and `peer' options of a guest: the
%%% BEAM node of its own that an `isolation => vm' app runs in.
%%%
%%% <ul>
%%% <li>The emulator is this node's own (`erts-<vsn>/bin/erlexec' of
%%%     `code:root_dir()'), so the guest runs the same OTP.</li>
%%% <li>`memory_limit' (MiB) is enforced twice. The OS limit: the guest
%%%     runs under `prlimit --data=Bytes' (util-linux, started without a
%%%     shell), `RLIMIT_DATA': every private writable mapping of the
%%%     process counts (the heaps, binaries, ETS, every allocator of the
%%%     emulator, thread stacks), and an allocation past it fails, which
%%%     ends the emulator (`Cannot allocate ... bytes of memory', with a
%%%     crash dump). And per process: `+hmax' of a quarter of the limit
%%%     (`+hmaxk true'): a process whose heap grows past it is killed and
%%%     logged, and its supervisor decides, before it takes the node
%%%     down. Not counted: code and files mapped from disk, shared
%%%     mappings (the JIT's executable memory), memory the kernel keeps
%%%     for the process (socket buffers, page cache), and programs the
%%%     guest starts (each gets the same limit of its own).</li>
%%% <li>`scheduler_limit' is `+S N:N'; without it the emulator's default
%%%     (one per core).</li>
%%% <li>The node is hidden (`-hidden'): it never joins the host's
%%%     cluster, `global' or `pg'. It starts with a throw-away cookie; the
%%%     host's is set over the control connection once it has booted, so
%%%     the cookie never shows on a command line.</li>
%%% <li>bc_gitops's own ebin is on the guest's code path (`-pa'): the
%%%     lifecycle and hot upgrade steps ({@link bc_gitops_lifecycle},
%%%     {@link bc_gitops_hot}) run there over `erpc'. The NIF is not
%%%     loaded in a guest.</li>
%%% <li>A crash dump goes to `Dir/<node>.erl_crash.dump', written for at
%%%     most 10 s.</li>
%%% <li>`extra_args' come last, so they can override any of the above
%%%     (`+hmax 0' turns the per-process limit off).</li>
%%% </ul>
-module(bc_gitops_vm_command).

-export([peer_options/3, dump_file/2, hmax_words/1]).

-define(DUMP_SECONDS, "10").

%% @doc The `peer:start_link/1' options of a new guest for `App', named
%% `<node_prefix>-<n>-<host os pid>' (node_prefix defaults to the app's
%% name), so that two guests, of one host or of two, never share a name.
%% `wait_boot' is the caller's to add.
-spec peer_options(atom(), map() | undefined, file:filename()) ->
    {ok, peer:start_options()} | {error, term()}.
peer_options(App, VmConfig, Dir) ->
    Config = case VmConfig of
                 undefined -> #{};
                 _ -> VmConfig
             end,
    case {erlang:is_alive(), exec(Config)} of
        {false, _} ->
            {error, {not_distributed, "isolation vm needs this node to run distributed "
                                      "(-name or -sname)"}};
        {true, {error, _} = Error} ->
            Error;
        {true, {ok, Exec}} ->
            Prefix = case Config of
                         #{node_prefix := P} -> unicode:characters_to_list(P);
                         _ -> atom_to_list(App)
                     end,
            Name = peer:random_name(Prefix),
            [_, Host] = string:split(atom_to_list(node()), "@"),
            {ok, #{name => Name, host => Host, longnames => net_kernel:longnames() =:= true,
                   connection => standard_io, peer_down => continue,
                   exec => Exec, args => args(Config), env => env(Dir, Name ++ "@" ++ Host)}}
    end.

%% @doc Where the guest `Node' writes its crash dump.
-spec dump_file(file:filename(), node() | string()) -> file:filename().
dump_file(Dir, Node) ->
    filename:join(Dir, lists:concat([Node, ".erl_crash.dump"])).

%% @doc The per-process heap limit for `memory_limit' MiB, in words: a
%% quarter of it.
-spec hmax_words(pos_integer()) -> pos_integer().
hmax_words(MemoryLimit) ->
    MemoryLimit * 1024 * 1024 div 4 div erlang:system_info(wordsize).

-spec exec(map()) -> {ok, peer:exec()} | {error, term()}.
exec(Config) ->
    Erlexec = filename:join(bin_dir(), "erlexec"),
    case Config of
        #{memory_limit := MB} ->
            case os:find_executable("prlimit") of
                false ->
                    {error, {memory_limit, "needs prlimit (util-linux) on the PATH"}};
                Prlimit ->
                    Bytes = integer_to_list(MB * 1024 * 1024),
                    %% `--' ends prlimit's options: the emulator's follow.
                    {ok, {Prlimit, ["--data=" ++ Bytes, "--", Erlexec]}}
            end;
        _ ->
            {ok, {Erlexec, []}}
    end.

-spec args(map()) -> [string()].
args(Config) ->
    Cookie = binary_to_list(binary:encode_hex(crypto:strong_rand_bytes(16))),
    Ebin = filename:dirname(code:which(?MODULE)),
    ["-hidden", "-setcookie", Cookie, "-pa", Ebin]
        ++ case Config of
               #{scheduler_limit := N} -> ["+S", lists:concat([N, ":", N])];
               _ -> []
           end
        ++ case Config of
               #{memory_limit := MB} ->
                   ["+hmax", integer_to_list(hmax_words(MB)), "+hmaxk", "true"];
               _ -> []
           end
        ++ [unicode:characters_to_list(A) || A <- maps:get(extra_args, Config, [])].

%% erlexec finds the emulator through these, as `erl' would set them.
-spec env(file:filename(), string()) -> [{string(), string()}].
env(Dir, Node) ->
    [{"ROOTDIR", code:root_dir()}, {"BINDIR", bin_dir()}, {"EMU", "beam"}, {"PROGNAME", "erl"},
     {"ERL_CRASH_DUMP", dump_file(Dir, Node)}, {"ERL_CRASH_DUMP_SECONDS", ?DUMP_SECONDS}].

-spec bin_dir() -> file:filename().
bin_dir() ->
    filename:join([code:root_dir(), "erts-" ++ erlang:system_info(version), "bin"]).
