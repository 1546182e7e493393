%%% @doc Hot code upgrade of a running application, without an appup: the
%%% steps are derived from the two builds.
%%%
%%% <ol>
%%% <li>The changed modules: every module of the new build whose beam MD5
%%%     differs from the loaded one, or that is not loaded yet.</li>
%%% <li>A module with `-on_load' (a NIF carrier) cannot be reloaded safely:
%%%     the upgrade is refused, and the caller restarts the app instead.</li>
%%% <li>The processes to move: the app's supervision tree walked from its
%%%     top supervisor (not the application master), each child with the
%%%     modules its child spec names (gen_event managers report theirs
%%%     through `gen_event:which_handlers/1').</li>
%%% <li>`sys:suspend/2' each of them (a timeout is caught, never the
%%%     caller's crash), `code:soft_purge/1' then load each changed module,
%%%     `sys:change_code/5' each suspended process so that `code_change/3'
%%%     runs, `sys:resume/2' each.</li>
%%% <li>The application controller learns the new `.app' keys, so
%%%     `application:which_applications/0' shows the new vsn.</li>
%%% </ol>
%%% Every step done (a module loaded, a process's state converted) is
%%% remembered, so that a failure undoes them in reverse order while the
%%% processes are still suspended: a converted state is converted back by
%%% the same code (`code_change({down, Vsn}, ...)' after an upgrade step,
%%% `code_change(Vsn, ...)' after a downgrade step), and each module gets
%%% its old beam back (or, when it is new, is removed). Then the processes
%%% are resumed. The result says whether the undo got the old version back
%%% whole (`reverted') or not (`not_reverted'); the caller decides what
%%% comes next (see {@link bc_gitops_runtime_default:upgrade/2}).
%%%
%%% An appup's consecutive `update' instructions are done as one (see
%%% group_updates/1); an `apply' or a load between two updates ends a
%%% group, and a failure after it cannot convert back the processes of an
%%% earlier group (they run again): the result is then `not_reverted', and
%%% the caller restarts the app.
-module(bc_gitops_hot).

-export([upgrade/4, direction/2]).

-type info() :: #{path := hot, modules := [module()], suspended_us := non_neg_integer(),
                  processes := non_neg_integer()}.
%% A failure before anything was changed, or one after steps were done
%% with whether undoing them brought the old version back whole.
-type failure() :: {error, {atom(), term()}} | {error, {atom(), term()}, reverted | not_reverted}.
-export_type([info/0, failure/0]).

%% One step of an upgrade, and what undoes it. Loads are prepared before
%% the processes are suspended (see prepare/1); inside the window only
%% the prepared code is put in place.
-type step() :: {load, prepared()} | {change, pid(), module(), term(), term()}.
-type prepared() :: {term(), [{module(), {file:filename(), binary()} | none | unrestorable}]}.
-type done() :: {loaded, module(), {file:filename(), binary()} | none | unrestorable}
              | {converted, pid(), module(), term(), term()}
              | {kept, pid()}.

-define(SUSPEND_TIMEOUT, 5000).
-define(CHANGE_TIMEOUT, 10000).

%% @doc Whether going from version `From' to `To' is an upgrade or a
%% downgrade (semantic versions; anything else counts as an upgrade).
-spec direction(binary(), binary()) -> up | down.
direction(From, To) ->
    case {bc_gitops_semver:parse_version(From), bc_gitops_semver:parse_version(To)} of
        {{ok, F}, {ok, T}} ->
            case bc_gitops_semver:compare(T, F) of
                lt -> down;
                _ -> up
            end;
        _ ->
            up
    end.

%% @doc Moves the running `App' to the build in `Ebins' (already on disk).
%% Up: load the new code, then `code_change(OldVsn, ...)' in it. Down (as
%% OTP's release handler does it): `code_change({down, Vsn}, ...)' in the
%% running, newer code first, so that it hands back a state the older code
%% knows, then load the older code.
-spec upgrade(atom(), pid() | undefined, [file:filename()], {up | down, string()}) ->
    {ok, info()} | failure().
upgrade(App, Top, Ebins, {Direction, AppVsn} = OldVsn) ->
    case appup_instructions(App, Ebins, Direction, AppVsn) of
        {ok, Instructions} -> follow_appup(App, Top, Ebins, Instructions, OldVsn);
        none -> derived(App, Top, Ebins, OldVsn)
    end.

-spec derived(atom(), pid() | undefined, [file:filename()], {up | down, string()}) ->
    {ok, info()} | failure().
derived(App, Top, Ebins, OldVsn) ->
    try
        Changed = changed_modules(Ebins),
        _ = [throw({on_load, M}) || {M, Beam} <- Changed, has_on_load(Beam)],
        Procs = processes(Top, [M || {M, _} <- Changed]),
        swap(App, Ebins, Changed, Procs, OldVsn)
    catch
        throw:{failed, Why, Undo} -> {error, Why, Undo};
        throw:{Stage, Why} -> {error, {Stage, Why}};
        %% Anything unexpected is a failed hot upgrade too: the caller
        %% restarts the app, so it is not left half upgraded.
        Class:Reason -> {error, {crashed, {Class, Reason}}}
    end.

%%% Appups

%% The appup instructions for this move, when there are any. Up: the new
%% version's .appup, its entry for the running version. Down, as OTP does
%% it: the running (newer) version's .appup, its down entry for the
%% version being returned to.
-spec appup_instructions(atom(), [file:filename()], up | down, string()) ->
    {ok, [tuple()]} | none.
appup_instructions(App, Ebins, up, RunningVsn) ->
    entry(in_dirs(App, ".appup", Ebins), up, RunningVsn);
appup_instructions(App, Ebins, down, _RunningVsn) ->
    %% The running version's ebin is the one on the code path now: the
    %% older build's ebins are not added before the instructions are read.
    Running = case code:where_is_file(atom_to_list(App) ++ ".appup") of
                  non_existing -> [];
                  File -> [File]
              end,
    case in_dirs(App, ".app", Ebins) of
        [AppFile | _] ->
            case file:consult(AppFile) of
                {ok, [{application, App, Keys}]} ->
                    entry(Running, down, proplists:get_value(vsn, Keys, ""));
                _ ->
                    none
            end;
        [] ->
            none
    end.

-spec in_dirs(atom(), string(), [file:filename()]) -> [file:filename()].
in_dirs(App, Ext, Dirs) ->
    [F || D <- Dirs, F <- [filename:join(D, atom_to_list(App) ++ Ext)], filelib:is_regular(F)].

%% The instructions of the first matching entry of the first .appup file.
-spec entry([file:filename()], up | down, string()) -> {ok, [tuple()]} | none.
entry([File | _], Direction, Vsn) ->
    case file:consult(File) of
        {ok, [{_Vsn, Ups, Downs}]} ->
            Entries = case Direction of up -> Ups; down -> Downs end,
            case [Is || {V, Is} <- Entries, vsn_matches(V, Vsn)] of
                [Instructions | _] -> {ok, Instructions};
                [] -> none
            end;
        _ ->
            none
    end;
entry([], _Direction, _Vsn) ->
    none.

%% An appup version is a string, or a binary holding a regular expression.
-spec vsn_matches(string() | binary(), string()) -> boolean().
vsn_matches(Vsn, OldVsn) when is_list(Vsn) -> Vsn =:= OldVsn;
vsn_matches(Re, OldVsn) when is_binary(Re) ->
    re:run(OldVsn, <<"^", Re/binary, "$">>, [{capture, none}]) =:= match.

%% Follows an appup's instructions in order. Supported: load_module,
%% add_module, delete_module (at the end, once unused), update (soft,
%% {advanced, Extra}, supervisor) and apply; anything else is refused, and
%% the caller restarts the app.
-spec follow_appup(atom(), pid() | undefined, [file:filename()], [tuple()],
                   {up | down, string()}) -> {ok, info()} | failure().
follow_appup(App, Top, Ebins, Instructions, OldVsn) ->
    try
        ok = code:add_pathsa(Ebins),
        Beams = maps:from_list([{list_to_atom(filename:basename(B, ".beam")), B}
                                || E <- Ebins, B <- filelib:wildcard(filename:join(E, "*.beam"))]),
        {Window, Procs, Deleted, _Done} =
            lists:foldl(fun(I, Acc) -> instruction(I, Acc, Top, Beams, OldVsn) end,
                        {0, 0, [], []}, group_updates(Instructions)),
        OldModules = case application:get_key(App, modules) of
                         {ok, Ms} -> Ms;
                         undefined -> []
                     end,
        ok = update_app_keys(App, Ebins),
        _ = [code:soft_purge(M) andalso code:delete(M) || M <- Deleted],
        ok = delete_removed(App, OldModules -- Deleted),
        {ok, #{path => hot, appup => true, modules => maps:keys(Beams), suspended_us => Window,
               processes => Procs}}
    catch
        throw:{failed, Why, Undo} -> {error, Why, Undo};
        throw:{Stage, Why} -> {error, {Stage, Why}};
        Class:Reason -> {error, {crashed, {Class, Reason}}}
    end.

%% The fold's accumulator: suspension window, processes moved, modules to
%% delete at the end, and the steps done so far (newest first).
-type appup_acc() :: {integer(), integer(), [module()], [done()]}.

-spec instruction(tuple(), appup_acc(), pid() | undefined,
                  #{module() => file:filename()}, {up | down, string()}) -> appup_acc().
instruction({load_module, M}, Acc, _Top, Beams, _Vsn) -> load_step(M, Beams, Acc);
instruction({load_module, M, _Deps}, Acc, _Top, Beams, _Vsn) -> load_step(M, Beams, Acc);
instruction({add_module, M}, Acc, _Top, Beams, _Vsn) -> load_step(M, Beams, Acc);
instruction({add_module, M, _Deps}, Acc, _Top, Beams, _Vsn) -> load_step(M, Beams, Acc);
instruction({delete_module, M}, {W, P, D, Done}, _Top, _Beams, _Vsn) -> {W, P, [M | D], Done};
instruction({delete_module, M, _Deps}, {W, P, D, Done}, _Top, _Beams, _Vsn) ->
    {W, P, [M | D], Done};
instruction({apply, {M, F, A}}, {_, _, _, Done} = Acc, _Top, _Beams, _Vsn) ->
    try apply(M, F, A) of
        _ -> Acc
    catch
        Class:Reason -> give_up({apply, {M, F, Class, Reason}}, Done)
    end;
instruction({updates, Updates}, Acc, Top, Beams, Vsn) ->
    updates(Updates, Acc, Top, Beams, Vsn);
instruction(Other, {_, _, _, Done}, _Top, _Beams, _Vsn) ->
    give_up({unsupported_appup_instruction, Other}, Done).

-spec load_step(module(), #{module() => file:filename()}, appup_acc()) -> appup_acc().
load_step(M, Beams, {W, P, D, Done}) ->
    case Beams of
        #{M := Beam} -> {W, P, D, steps([{load, prepare_or_undo([{M, Beam}], Done)}], Done)};
        _ -> give_up({load, {M, not_in_build}}, Done)
    end.

-type change() :: soft | supervisor | {advanced, term()}.

%% Consecutive `update' instructions become one `{updates, [{M, Change}]}',
%% done as OTP's release handler does them: every process of any of them
%% suspended, all the modules loaded, the code changes run, all resumed.
%% So a failure in the last can still convert the first back, and no
%% process runs new code against another's old code in between.
-spec group_updates([tuple()]) -> [tuple()].
group_updates(Instructions) ->
    lists:reverse(lists:foldl(fun group_update/2, [], Instructions)).

-spec group_update(tuple(), [tuple()]) -> [tuple()].
group_update({update, M}, Acc) ->
    group_update({update, M, soft}, Acc);
group_update({update, M, Change}, Acc)
  when Change =:= soft; Change =:= supervisor;
       tuple_size(Change) =:= 2, element(1, Change) =:= advanced ->
    case Acc of
        [{updates, Us} | Rest] -> [{updates, Us ++ [{M, Change}]} | Rest];
        _ -> [{updates, [{M, Change}]} | Acc]
    end;
group_update(Instruction, Acc) ->
    [Instruction | Acc].

%% One group of updates. As with OTP's release handler, a `soft' change
%% keeps the processes' state as it is; `{advanced, Extra}' runs their
%% code_change with `Extra', and `supervisor' the supervisor's own (its
%% init/1 gives the new child specs).
-spec updates([{module(), change()}], appup_acc(), pid() | undefined,
              #{module() => file:filename()}, {up | down, string()}) -> appup_acc().
updates(Updates, {W, P, D, Done}, Top, Beams, {Direction, AppVsn}) ->
    ToLoad = [case Beams of
                  #{M := Beam} -> {M, Beam};
                  _ -> give_up({load, {M, not_in_build}}, Done)
              end || {M, _} <- Updates],
    Loads = [{load, prepare_or_undo(ToLoad, Done)}],
    %% Up: code_change(OldVsn) in the new code. Down, as the release handler
    %% does it: code_change({down, Vsn}) in the running, newer code, with
    %% the vsn of the module about to be loaded.
    Vsn = fun(M) ->
                  case Direction of
                      up -> old_vsn(M, AppVsn);
                      down -> {down, beam_vsn(maps:get(M, Beams), AppVsn)}
                  end
          end,
    Moved = [{M, Change, Vsn(M),
              try processes(Top, [M]) catch throw:{Stage, Why} -> give_up({Stage, Why}, Done) end}
             || {M, Change} <- Updates],
    %% A process named by several updates is suspended once.
    Procs = lists:ukeysort(1, lists:append([Ps || {_, _, _, Ps} <- Moved])),
    T0 = erlang:monotonic_time(microsecond),
    Suspended = suspend_or_undo(Procs, Done),
    Changes = [{change, Pid, M, OldVsn, extra(Change)}
               || {M, Change, OldVsn, Ps} <- Moved, Change =/= soft, Change =/= supervisor,
                  {Pid, _} <- Ps],
    %% A supervisor's code_change reads the child specs of the init/1 loaded
    %% at the time: it runs once the modules are loaded, either way.
    Sups = [{change, Pid, M, OldVsn, []}
            || {M, supervisor, OldVsn, Ps} <- Moved, {Pid, _} <- Ps],
    Done1 = try
                case Direction of
                    up -> changes(Changes ++ Sups, steps(Loads, Done));
                    down -> changes(Sups, steps(Loads, changes(Changes, Done)))
                end
            after
                resume(Suspended)
            end,
    {W + erlang:monotonic_time(microsecond) - T0, P + length(Suspended), D, Done1}.

%% Undoes what was done, and fails with `Why'.
-spec give_up({atom(), term()}, [done()]) -> no_return().
give_up(Why, Done) ->
    throw({failed, Why, undo(Done)}).

-spec extra({advanced, term()}) -> term().
extra({advanced, Extra}) -> Extra.

-spec suspend_or_undo([{pid(), [module()]}], [done()]) -> [{pid(), [module()]}].
suspend_or_undo(Procs, Done) ->
    try
        suspend(Procs)
    catch
        throw:{suspend, _} = Why -> give_up(Why, Done)
    end.

-spec swap(atom(), [file:filename()], [{module(), file:filename()}],
           [{pid(), [module()]}], {up | down, string()}) -> {ok, info()}.
swap(App, Ebins, Changed, Procs, {Direction, AppVsn}) ->
    %% code_change/3 gets each module's old vsn (up), or {down, Vsn} with
    %% the vsn of the module about to be loaded, as release_handler gives them.
    Vsns = maps:from_list([{M, case Direction of
                                   up -> old_vsn(M, AppVsn);
                                   down -> {down, beam_vsn(Beam, AppVsn)}
                               end} || {M, Beam} <- Changed]),
    %% Worked out before the suspension: reading 10,000 processes' initial
    %% calls takes tens of milliseconds.
    ChangeOf = maps:from_list([{Pid, changed_callbacks(Pid, Mods, Vsns)} || {Pid, Mods} <- Procs]),
    Loads = [{load, prepare(Changed)}],
    T0 = erlang:monotonic_time(microsecond),
    Suspended = suspend(Procs),
    Changes = [{change, Pid, M, maps:get(M, Vsns), []}
               || {Pid, _} <- Suspended, M <- maps:get(Pid, ChangeOf)],
    try
        ok = code:add_pathsa(Ebins),
        _ = case Direction of
                up -> changes(Changes, steps(Loads, []));
                down -> steps(Loads, changes(Changes, []))
            end,
        ok
    after
        resume(Suspended)
    end,
    Window = erlang:monotonic_time(microsecond) - T0,
    OldModules = case application:get_key(App, modules) of
                     {ok, Ms} -> Ms;
                     undefined -> []
                 end,
    ok = update_app_keys(App, Ebins),
    ok = delete_removed(App, OldModules),
    {ok, #{path => hot, modules => [M || {M, _} <- Changed], suspended_us => Window,
           processes => length(Suspended)}}.

%% Suspends every process (in parallel, see each/2), or none: when one
%% fails, those suspended are resumed and the first failure is thrown.
-spec suspend([{pid(), [module()]}]) -> [{pid(), [module()]}].
suspend(Procs) ->
    Results = each(fun({Pid, _} = P) ->
                           try sys:suspend(Pid, ?SUSPEND_TIMEOUT) of
                               ok -> {ok, P}
                           catch
                               exit:Why ->
                                   %% The suspend request stays in the late
                                   %% process's queue: a resume queued behind
                                   %% it (timeout 0: nobody waits for the
                                   %% answer) lets it carry on once there.
                                   _ = (catch sys:resume(Pid, 0)),
                                   {error, {Pid, Why}}
                           end
                   end, Procs),
    Suspended = [P || {ok, P} <- Results],
    case [E || {error, E} <- Results] of
        [] ->
            Suspended;
        [First | _] ->
            resume(Suspended),
            throw({suspend, First})
    end.

-spec resume([{pid(), [module()]}]) -> ok.
resume(Suspended) ->
    _ = each(fun({Pid, _}) -> catch sys:resume(Pid, ?SUSPEND_TIMEOUT) end, Suspended),
    ok.

%% The modules a process's code_change is run for. A gen_server,
%% gen_statem or supervisor calls its callback module's code_change
%% whatever module is named, so it is changed once: for its callback module
%% when that changed, else for the first changed module of its child spec.
%% A gen_event manager changes only the handlers of the module named: once
%% for each changed handler.
-spec changed_callbacks(pid(), [module()], #{module() => term()}) -> [module()].
changed_callbacks(Pid, Mods, Vsns) ->
    Changed = [M || M <- Mods, is_map_key(M, Vsns)],
    case catch proc_lib:translate_initial_call(Pid) of
        {gen_event, _, _} -> Changed;
        {M, _, _} when is_map_key(M, Vsns) -> [M];
        _ -> lists:sublist(Changed, 1)
    end.

%%% Steps and their undoing

%% Does each step in order; on a failure, undoes those done (newest
%% first) and throws `{failed, Why, reverted | not_reverted}'. Returns the
%% steps done, newest first, with those done before (`Done').
-spec steps([step()], [done()]) -> [done()].
steps([], Done) ->
    Done;
steps([Step | Rest], Done) ->
    case attempt(Step) of
        {ok, Did} when is_list(Did) -> steps(Rest, lists:reverse(Did, Done));
        {ok, Did} -> steps(Rest, [Did | Done]);
        {error, Why} -> give_up(Why, Done)
    end.

%% The code_change steps, one per process, all at once (see each/2): each
%% process's state is its own. When any fails, all that succeeded are
%% undone with the steps before (`Done'), and the first failure is thrown.
-spec changes([step()], [done()]) -> [done()].
changes(Changes, Done) ->
    Results = each(fun attempt/1, Changes),
    Did = lists:reverse([D || {ok, D} <- Results]) ++ Done,
    case [Why || {error, Why} <- Results] of
        [] ->
            Did;
        Failures ->
            %% A code_change that timed out may still run in its process
            %% after the old code is back: that process cannot be trusted.
            Undo = undo(Did),
            TimedOut = [F || {code_change, {_, _, {'EXIT', {timeout, _}}}} = F <- Failures],
            throw({failed, hd(Failures), case TimedOut of
                                             [] -> Undo;
                                             _ -> not_reverted
                                         end})
    end.

-spec attempt(step()) -> {ok, done() | [done()]} | {error, {atom(), term()}}.
attempt(Step) ->
    try
        {ok, step(Step)}
    catch
        throw:{Stage, Why} -> {error, {Stage, Why}};
        Class:Reason -> {error, {crashed, {Class, Reason}}}
    end.

-spec step(step()) -> done() | [done()].
step({load, {Prepared, Olds}}) ->
    %% All the modules at once, or none.
    case code:finish_loading(Prepared) of
        ok -> [{loaded, M, Old} || {M, Old} <- Olds];
        {error, [{M, Why} | _]} -> throw({load, {M, Why}})
    end;
step({change, Pid, M, Vsn, Extra}) ->
    case catch sys:change_code(Pid, M, Vsn, Extra, ?CHANGE_TIMEOUT) of
        ok ->
            {converted, Pid, M, Vsn, Extra};
        %% code_change is an optional callback: without one there is no
        %% state to convert, and the process keeps the one it has.
        {error, {'EXIT', {undef, [{_, code_change, _, _} | _]}}} ->
            {kept, Pid};
        Other ->
            throw({code_change, {Pid, M, Other}})
    end.

%% Undoes the steps done, newest first; stops at the first that cannot be
%% undone. A supervisor's code_change reads the child specs from the
%% init/1 loaded at the time, so supervisors are changed again last, once
%% the old code is back.
-spec undo([done()]) -> reverted | not_reverted.
undo(Done) ->
    {Sups, Others} = lists:partition(fun is_supervisor_change/1, Done),
    undo_each(Others ++ Sups).

-spec undo_each([done()]) -> reverted | not_reverted.
undo_each([]) ->
    reverted;
undo_each([Did | Rest]) ->
    case undo_one(Did) of
        true -> undo_each(Rest);
        false -> not_reverted
    end.

-spec is_supervisor_change(done()) -> boolean().
is_supervisor_change({converted, Pid, _, _, _}) ->
    case catch proc_lib:translate_initial_call(Pid) of
        {supervisor, _, _} -> true;
        _ -> false
    end;
is_supervisor_change(_) ->
    false.

-spec undo_one(done()) -> boolean().
undo_one({kept, _Pid}) ->
    true;
undo_one({loaded, _M, unrestorable}) ->
    false;
undo_one({loaded, M, none}) ->
    code:soft_purge(M) andalso code:delete(M);
undo_one({loaded, M, {File, Bin}}) ->
    code:soft_purge(M) andalso code:load_binary(M, File, Bin) =:= {module, M};
undo_one({converted, Pid, M, Vsn, Extra}) ->
    %% The same code converts the state back: an upgrade step's
    %% code_change(Vsn) is undone by code_change({down, Vsn}), and back.
    Back = case Vsn of
               {down, V} -> V;
               V -> {down, V}
           end,
    (catch sys:change_code(Pid, M, Back, Extra, ?CHANGE_TIMEOUT)) =:= ok.

%% Fun on every item, results in order. A few hundred synchronous sys calls
%% one after the other take a context switch each; above ?EACH_RUN items
%% they are made from up to ?EACH_WORKERS processes at once, each a
%% contiguous run (Fun must not raise).
-define(EACH_RUN, 64).
-define(EACH_WORKERS, 64).
-spec each(fun((T) -> R), [T]) -> [R].
each(Fun, Items) when length(Items) =< ?EACH_RUN ->
    [Fun(I) || I <- Items];
each(Fun, Items) ->
    Size = max(?EACH_RUN, (length(Items) + ?EACH_WORKERS - 1) div ?EACH_WORKERS),
    Self = self(),
    Workers = [spawn_monitor(fun() -> Self ! {each, self(), [Fun(I) || I <- Run]} end)
               || Run <- runs(Items, Size)],
    lists:append([receive
                      {each, Pid, Results} -> erlang:demonitor(Ref, [flush]), Results;
                      {'DOWN', Ref, process, Pid, Why} -> error({each_worker, Why})
                  end || {Pid, Ref} <- Workers]).

-spec runs([T], pos_integer()) -> [[T]].
runs([], _Size) ->
    [];
runs(Items, Size) when length(Items) =< Size ->
    [Items];
runs(Items, Size) ->
    {Run, Rest} = lists:split(Size, Items),
    [Run | runs(Rest, Size)].

%% Everything of a load that can be done before the processes are
%% suspended, so that the suspension window holds no file read, no beam
%% decoding and no purge (a purge looks at every process of the node):
%% the old object code is read (its build directory may be gone when it
%% is needed again), the old code of each module purged (a process still
%% in it fails the upgrade now, before anything is suspended), and the new
%% code read and prepared (code:prepare_loading/1).
-spec prepare([{module(), file:filename()}]) -> prepared().
prepare(Loads) ->
    Olds = [{M, old_code(M)} || {M, _} <- Loads],
    _ = [code:soft_purge(M) orelse throw({old_code_in_use, M}) || {M, _} <- Loads],
    Bins = [case file:read_file(Beam) of
                {ok, Bin} -> {M, Beam, Bin};
                {error, Why} -> throw({load, {M, Why}})
            end || {M, Beam} <- Loads],
    case code:prepare_loading(Bins) of
        {ok, Prepared} -> {Prepared, Olds};
        {error, [{M, Why} | _]} -> throw({load, {M, Why}})
    end.

-spec prepare_or_undo([{module(), file:filename()}], [done()]) -> prepared().
prepare_or_undo(Loads, Done) ->
    try
        prepare(Loads)
    catch
        throw:{Stage, Why} -> give_up({Stage, Why}, Done)
    end.

%% The object code of a module as loaded now, to load it back on an undo.
%% code:is_loaded/1, not code:which/1: with the new ebins on the path,
%% which/1 of a module not loaded yet finds the new beam.
-spec old_code(module()) -> {file:filename(), binary()} | none | unrestorable.
old_code(M) ->
    case code:is_loaded(M) of
        false -> none;
        {file, File} when is_list(File) ->
            case file:read_file(File) of
                {ok, Bin} -> {File, Bin};
                {error, _} -> unrestorable
            end;
        _ -> unrestorable
    end.

-spec old_vsn(module(), string()) -> term().
old_vsn(Mod, Default) ->
    case code:is_loaded(Mod) of
        {file, _} ->
            case lists:keyfind(vsn, 1, Mod:module_info(attributes)) of
                {vsn, [Vsn]} -> Vsn;
                _ -> Default
            end;
        false ->
            Default
    end.

-spec beam_vsn(file:filename(), string()) -> term().
beam_vsn(Beam, Default) ->
    case beam_lib:version(Beam) of
        {ok, {_, [Vsn]}} -> Vsn;
        _ -> Default
    end.

%% Every module of the new build that is not loaded as it is there.
-spec changed_modules([file:filename()]) -> [{module(), file:filename()}].
changed_modules(Ebins) ->
    lists:append([changed_in(Ebin) || Ebin <- Ebins]).

-spec changed_in(file:filename()) -> [{module(), file:filename()}].
changed_in(Ebin) ->
    [{M, Beam} || Beam <- filelib:wildcard(filename:join(Ebin, "*.beam")),
                  {ok, {M, New}} <- [beam_lib:md5(Beam)],
                  loaded_md5(M) =/= New].

-spec loaded_md5(module()) -> binary() | undefined.
loaded_md5(Mod) ->
    case code:is_loaded(Mod) of
        {file, _} -> Mod:module_info(md5);
        false -> undefined
    end.

-spec has_on_load(file:filename()) -> boolean().
has_on_load(Beam) ->
    case beam_disasm:file(Beam) of
        {beam_file, _, _, _, _, Code} ->
            lists:any(fun({function, _, _, _, Is}) -> lists:member(on_load, Is) end, Code);
        _ ->
            true
    end.

%% The app's processes that run a changed module, found from its top
%% supervisor down, each with the modules of its child spec.
-spec processes(pid() | undefined, [module()]) -> [{pid(), [module()]}].
processes(undefined, _Changed) ->
    throw({no_top_supervisor, undefined});
processes(Top, Changed) ->
    All = walk([{Top, [supervisor_module(Top)]}], []),
    [{Pid, Mods} || {Pid, Mods} <- All, lists:any(fun(M) -> lists:member(M, Changed) end, Mods)].

-spec walk([{pid(), [module()]}], [{pid(), [module()]}]) -> [{pid(), [module()]}].
walk([], Acc) ->
    Acc;
walk([{Sup, _} = Node | Rest], Acc) ->
    Children = case catch supervisor:which_children(Sup) of
                   List when is_list(List) -> List;
                   _ -> []
               end,
    Subs = [{C, child_modules(C, Mods)} || {_, C, supervisor, Mods} <- Children, is_pid(C)],
    Workers = [{C, child_modules(C, Mods)} || {_, C, worker, Mods} <- Children, is_pid(C)],
    walk(Rest ++ Subs, [Node | Workers ++ Acc]).

-spec supervisor_module(pid()) -> module().
supervisor_module(Pid) ->
    case catch supervisor:get_callback_module(Pid) of
        M when is_atom(M) -> M;
        _ -> undefined
    end.

-spec child_modules(pid(), [module()] | dynamic) -> [module()].
child_modules(Pid, dynamic) ->
    case catch gen_event:which_handlers(Pid) of
        Handlers when is_list(Handlers) -> [H || H <- Handlers, is_atom(H)];
        _ -> []
    end;
child_modules(Pid, Mods) ->
    case catch supervisor:get_callback_module(Pid) of
        M when is_atom(M), M =/= undefined -> lists:usort([M | Mods]);
        _ -> Mods
    end.

%% Modules the old version had and the new one does not are deleted, once
%% nothing runs them (soft purge); one still in use is left and logged.
-spec delete_removed(atom(), [module()]) -> ok.
delete_removed(App, OldModules) ->
    New = case application:get_key(App, modules) of
              {ok, Ms} -> Ms;
              undefined -> OldModules
          end,
    _ = [case code:soft_purge(M) andalso code:delete(M) of
             true -> ok;
             false -> logger:warning("bc_gitops: ~p of ~p is still in use; not deleted", [M, App])
         end || M <- OldModules -- New],
    ok.

%% The application controller's copy of the .app keys (vsn, modules...).
-spec update_app_keys(atom(), [file:filename()]) -> ok.
update_app_keys(App, Ebins) ->
    Files = [F || E <- Ebins, F <- [filename:join(E, atom_to_list(App) ++ ".app")],
                  filelib:is_regular(F)],
    case Files of
        [File | _] ->
            {ok, [AppSpec]} = file:consult(File),
            ok = application_controller:change_application_data([AppSpec], []);
        [] ->
            ok
    end.
