%%% @doc Runs an external program (a build tool) without a shell: started
%%% with `open_port({spawn_executable, ...})' and an argument list, so that
%%% nothing from a spec is ever interpreted by a shell.
%%%
%%% Every port program already runs in a session and process group of its
%%% own (erl_child_setup makes it one), so at the timeout the whole group,
%%% the build tool and every child it started, is killed, not just the first
%%% process. The output is kept, and
%%% the last lines of it go into the error.
-module(bc_gitops_exec).

-export([run/3, find/1]).

-type opts() :: #{cd => file:filename(), env => [{string(), string() | false}],
                  timeout => pos_integer()}.
-type error() :: {exit_status, integer(), Tail :: binary()}
               | {timeout, Tail :: binary()}
               | {not_found, string()}.
-export_type([opts/0, error/0]).

%% The last lines of output kept in an error.
-define(TAIL_LINES, 40).
%% Output kept in memory at most (the end of it).
-define(MAX_OUTPUT, 1048576).

%% @doc The absolute path of `Program' on the PATH, or an error.
-spec find(string()) -> {ok, string()} | {error, {not_found, string()}}.
find(Program) ->
    case os:find_executable(Program) of
        false -> {error, {not_found, Program}};
        Path -> {ok, Path}
    end.

%% @doc Runs `Program' (a name on the PATH or a path) with `Args'.
%% `timeout' defaults to 600000 ms.
-spec run(string(), [string() | binary()], opts()) -> {ok, binary()} | {error, error()}.
run(Program, Args, Opts) ->
    case find(Program) of
        {ok, Exe} -> start(Exe, Args, Opts);
        {error, _} = E -> E
    end.

-spec start(string(), [string() | binary()], opts()) -> {ok, binary()} | {error, error()}.
start(Exe, Args, Opts) ->
    PortOpts = [{args, Args}, exit_status, stderr_to_stdout, binary, use_stdio, hide]
        ++ [{cd, D} || #{cd := D} <- [Opts]]
        ++ [{env, E} || #{env := E} <- [Opts]],
    Port = open_port({spawn_executable, Exe}, PortOpts),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    Deadline = erlang:monotonic_time(millisecond) + maps:get(timeout, Opts, 600000),
    collect(Port, OsPid, Deadline, <<>>).

-spec collect(port(), non_neg_integer(), integer(), binary()) ->
    {ok, binary()} | {error, error()}.
collect(Port, OsPid, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, Data}} ->
            collect(Port, OsPid, Deadline, keep(<<Acc/binary, Data/binary>>));
        {Port, {exit_status, 0}} ->
            {ok, Acc};
        {Port, {exit_status, Status}} ->
            {error, {exit_status, Status, tail(Acc)}}
    after Left ->
        kill_group(OsPid),
        catch port_close(Port),
        flush(Port),
        {error, {timeout, tail(Acc)}}
    end.

%% The program leads its own process group, so its pid is the group id:
%% kill the whole group.
-spec kill_group(non_neg_integer()) -> ok.
kill_group(OsPid) ->
    case find("kill") of
        {ok, Kill} ->
            P = open_port({spawn_executable, Kill},
                          [{args, ["-KILL", "--", "-" ++ integer_to_list(OsPid)]},
                           exit_status, stderr_to_stdout, hide]),
            receive {P, {exit_status, _}} -> ok after 5000 -> ok end,
            flush(P);
        {error, _} ->
            ok
    end.

-spec flush(port()) -> ok.
flush(Port) ->
    receive {Port, _} -> flush(Port) after 0 -> ok end.

-spec keep(binary()) -> binary().
keep(Bin) when byte_size(Bin) > ?MAX_OUTPUT ->
    binary:part(Bin, byte_size(Bin) - ?MAX_OUTPUT, ?MAX_OUTPUT);
keep(Bin) ->
    Bin.

%% @private The last lines of the output.
-spec tail(binary()) -> binary().
tail(Output) ->
    Lines = binary:split(Output, <<"\n">>, [global]),
    Last = lists:nthtail(max(0, length(Lines) - ?TAIL_LINES), Lines),
    iolist_to_binary(lists:join(<<"\n">>, Last)).
