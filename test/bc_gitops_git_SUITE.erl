%%% git sync through the NIF, from Erlang: a real repository on disk, the
%%% error shapes, redaction, and proof that a large clone never holds a
%%% normal scheduler.
-module(bc_gitops_git_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([follows_commits/1, errors_are_typed_and_redacted/1,
         large_clone_leaves_schedulers_free/1]).
-export([measure_during_sync/1]).

all() -> [follows_commits, errors_are_typed_and_redacted, large_clone_leaves_schedulers_free].

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_nif_git"),
    Origin = filename:join(Dir, "origin"),
    ok = filelib:ensure_path(Origin),
    git(Origin, ["init", "-q", "-b", "main"]),
    [{dir, Dir}, {origin, Origin}, {checkout, filename:join(Dir, "checkout")} | Config].

end_per_testcase(_Case, Config) ->
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

follows_commits(Config) ->
    Origin = ?config(origin, Config),
    Checkout = ?config(checkout, Config),
    write(Origin, "apps/a/app.config", "v1"),
    C1 = commit(Origin, "one"),
    Opts = #{url => "file://" ++ Origin, local_path => Checkout},
    ?assertMatch({ok, #{commit := C1, changed := true, healed := undefined}},
                 bc_gitops_git:sync(Opts)),
    ?assertMatch({ok, #{commit := C1, changed := false}}, bc_gitops_git:sync(Opts)),
    %% A local edit and a stray file are overwritten by the next sync.
    write(Checkout, "apps/a/app.config", "edited by hand"),
    write(Checkout, "apps/stray/app.config", "stray"),
    write(Origin, "apps/a/app.config", "v2"),
    C2 = commit(Origin, "two"),
    ?assertMatch({ok, #{commit := C2, changed := true}}, bc_gitops_git:sync(Opts)),
    ?assertEqual({ok, <<"v2">>}, file:read_file(filename:join(Checkout, "apps/a/app.config"))),
    ?assertNot(filelib:is_file(filename:join(Checkout, "apps/stray/app.config"))),
    %% A pinned commit checks out that commit.
    ?assertMatch({ok, #{commit := C1, changed := true}},
                 bc_gitops_git:sync(Opts#{ref => C1})),
    ?assertEqual({ok, <<"v1">>}, file:read_file(filename:join(Checkout, "apps/a/app.config"))).

errors_are_typed_and_redacted(Config) ->
    Origin = ?config(origin, Config),
    Checkout = ?config(checkout, Config),
    write(Origin, "f", "x"),
    _ = commit(Origin, "one"),
    ?assertMatch({error, {ref_not_found, _}},
                 bc_gitops_git:sync(#{url => Origin, local_path => Checkout,
                                      ref => <<"no-such-branch">>})),
    {ok, Closed} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Closed),
    ok = gen_tcp:close(Closed),
    Url = "https://deploy:s3cr3t-token@127.0.0.1:" ++ integer_to_list(Port) ++ "/repo.git",
    {error, {unreachable, Message}} =
        bc_gitops_git:sync(#{url => Url, local_path => Checkout ++ "2", timeout => 5000,
                             token => <<"another-s3cr3t">>}),
    ?assertEqual(nomatch, binary:match(Message, [<<"s3cr3t">>, <<"deploy:">>])),
    ?assertMatch({error, {invalid_input, _}}, bc_gitops_git:sync(#{url => Origin})),
    ?assertMatch({error, {invalid_input, _}},
                 bc_gitops_git:sync(#{url => Origin, local_path => Checkout, timeout => -1})),
    ?assertMatch({error, {invalid_input, _}},
                 bc_gitops_git:sync(#{url => Origin, local_path => <<255, 0>>})).

%% While a clone of tens of MB runs in the NIF, a process on the node's
%% only normal scheduler keeps answering within 5 ms. The node is a peer
%% started with +S 1, so a NIF that held a normal scheduler would stall the
%% echo loop for the whole clone.
large_clone_leaves_schedulers_free(Config) ->
    Origin = ?config(origin, Config),
    Checkout = ?config(checkout, Config),
    [write(Origin, "blob" ++ integer_to_list(N), crypto:strong_rand_bytes(4 * 1024 * 1024))
     || N <- lists:seq(1, 12)],
    _ = commit(Origin, "48 MB of incompressible data"),
    Paths = [filename:dirname(code:which(M)) || M <- [bc_gitops_git, ?MODULE]],
    {ok, Peer, _Node} = peer:start_link(#{connection => standard_io,
                                          args => ["+S", "1:1" | lists:append([["-pa", P] || P <- Paths])]}),
    try
        {Result, Samples, Worst} =
            peer:call(Peer, ?MODULE, measure_during_sync,
                      [#{url => "file://" ++ Origin, local_path => Checkout}], 120000),
        ct:pal("sync ~p; ~p echo round trips, worst ~p us", [Result, Samples, Worst]),
        ?assertMatch({ok, #{changed := true}}, Result),
        ?assert(Samples > 100),
        ?assert(Worst < 5000)
    after
        peer:stop(Peer)
    end.

%% Runs on the peer: syncs in one process while this one times echo round
%% trips to a third, until the sync is done.
measure_during_sync(Opts) ->
    1 = erlang:system_info(schedulers_online),
    Echo = spawn_link(fun Loop() -> receive {From, Ref} -> From ! Ref, Loop() end end),
    Self = self(),
    Syncer = spawn_link(fun() -> Self ! {synced, bc_gitops_git:sync(Opts)} end),
    echo_loop(Echo, Syncer, 0, 0).

echo_loop(Echo, Syncer, Samples, Worst) ->
    receive
        {synced, Result} -> {Result, Samples, Worst}
    after 1 ->
        Ref = make_ref(),
        T0 = erlang:monotonic_time(microsecond),
        Echo ! {self(), Ref},
        receive Ref -> ok end,
        Rtt = erlang:monotonic_time(microsecond) - T0,
        echo_loop(Echo, Syncer, Samples + 1, max(Worst, Rtt))
    end.

%% Helpers

write(Repo, Rel, Content) ->
    bc_gitops_test_util:write_file(filename:join(Repo, Rel), Content).

commit(Repo, Message) -> bc_gitops_test_util:commit(Repo, Message).

git(Dir, Args) -> bc_gitops_test_util:git(Dir, Args).
