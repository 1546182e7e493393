%%% The planner through the NIF: records in, ordered actions and blocked
%%% apps out.
-module(bc_gitops_plan_tests).

-include_lib("eunit/include/eunit.hrl").
-include("bc_gitops.hrl").

spec(Name, Version) -> spec(Name, Version, [], #{}).
spec(Name, Version, Deps, Env) ->
    #app_spec{name = Name, version = Version, source = #source_spec{type = hex},
              env = Env, depends_on = Deps}.

state(Name, Version) -> state(Name, Version, running, #{}).
state(Name, Version, Status, Env) ->
    #app_state{name = Name, version = Version, status = Status, env = Env}.

names(Actions) ->
    [{element(1, A), case element(2, A) of #app_spec{name = N} -> N; N -> N end}
     || A <- Actions].

empty_test() ->
    ?assertEqual({ok, #{actions => [], blocked => []}}, bc_gitops_plan:plan([], [], [])).

every_action_kind_test() ->
    Desired = [spec(web, <<"2.0">>, [db], #{}),
               spec(db, <<"1.0">>),
               spec(cache, <<"1.0">>, [], #{size => 10}),
               spec(queue, <<"1.0">>),
               spec(same, <<"1.0">>, [], #{k => v})],
    Current = #{web => state(web, <<"1.0">>),
                cache => state(cache, <<"1.0">>, running, #{size => 5}),
                queue => state(queue, <<"1.0">>, stopped, #{}),
                same => state(same, <<"1.0">>, running, #{k => v}),
                old => state(old, <<"0.1">>)},
    {ok, #{actions := Actions, blocked := []}} = bc_gitops_plan:plan(Desired, Current, []),
    ?assertEqual([{remove, old}, {reconfigure, cache}, {deploy, db}, {redeploy, queue},
                  {upgrade, web}],
                 names(Actions)),
    ?assert(lists:member({upgrade, spec(web, <<"2.0">>, [db], #{}), <<"1.0">>}, Actions)),
    ?assert(lists:member({redeploy, spec(queue, <<"1.0">>), stopped}, Actions)).

env_compared_exactly_test() ->
    %% 1 == 1.0 but not =:=: a change of type is a change.
    {ok, #{actions := Actions}} =
        bc_gitops_plan:plan([spec(a, <<"1">>, [], #{n => 1.0})],
                            [state(a, <<"1">>, running, #{n => 1})], []),
    ?assertEqual([{reconfigure, a}], names(Actions)).

%% An app that runs where its spec no longer says (isolation or vm_config,
%% compared exactly) is moved by an upgrade from its own version; one
%% from a runtime that does not say where it runs (isolation undefined)
%% is left where it is.
isolation_change_moves_the_app_test() ->
    Vm = fun(Name, Config) -> (spec(Name, <<"1">>))#app_spec{isolation = vm, vm_config = Config} end,
    At = fun(Name, Isolation, Config) ->
                 (state(Name, <<"1">>))#app_state{isolation = Isolation, vm_config = Config}
         end,
    Desired = [Vm(into_vm, undefined), Vm(more_memory, #{memory_limit => 256}),
               Vm(same, #{memory_limit => 128}), Vm(unsaid, undefined),
               spec(out_of_vm, <<"1">>)],
    Current = [At(into_vm, embedded, undefined), At(more_memory, vm, #{memory_limit => 128}),
               At(same, vm, #{memory_limit => 128}), At(unsaid, undefined, undefined),
               At(out_of_vm, vm, undefined)],
    {ok, #{actions := Actions}} = bc_gitops_plan:plan(Desired, Current, []),
    ?assertEqual([{upgrade, into_vm}, {upgrade, more_memory}, {upgrade, out_of_vm}],
                 names(Actions)),
    ?assert(lists:member({upgrade, Vm(more_memory, #{memory_limit => 256}), <<"1">>}, Actions)).

blocked_apps_test() ->
    Desired = [spec(a, <<"1">>, [b], #{}), spec(b, <<"1">>, [a], #{}),
               spec(c, <<"1">>, [ghost], #{}), spec(d, <<"1">>, [broken], #{}),
               spec(e, <<"1">>, [c], #{}), spec(free, <<"1">>)],
    Current = [state(broken, <<"1">>)],
    {ok, #{actions := Actions, blocked := Blocked}} =
        bc_gitops_plan:plan(Desired, Current, [<<"broken">>]),
    ?assertEqual([{deploy, free}], names(Actions)),
    ?assertEqual([{a, {cycle, [a, b]}}, {b, {cycle, [a, b]}},
                  {broken, invalid_spec},
                  {c, {missing_dependency, ghost}},
                  {d, {invalid_dependency, broken}},
                  {e, {dependency_blocked, c}}],
                 Blocked).

dependency_order_test() ->
    Desired = [spec(top, <<"1">>, [left, right], #{}), spec(left, <<"1">>, [base], #{}),
               spec(right, <<"1">>, [base], #{}), spec(base, <<"1">>)],
    Current = [state(gone_a, <<"1">>, running, #{}),
               (state(gone_b, <<"1">>))#app_state{depends_on = [gone_a]}],
    {ok, #{actions := Actions}} = bc_gitops_plan:plan(lists:reverse(Desired), Current, []),
    ?assertEqual([{remove, gone_b}, {remove, gone_a},
                  {deploy, base}, {deploy, left}, {deploy, right}, {deploy, top}],
                 names(Actions)).

bad_input_raises_test() ->
    ?assertError({bad_record, app_spec, 0},
                 bc_gitops_plan:plan([{not_a_spec}], [], [])),
    ?assertError({bad_record, app_state, 1},
                 bc_gitops_plan:plan([], [state(a, <<"1">>), {app_state, x}], [])).
