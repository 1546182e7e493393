%%% Encrypted env values on the Erlang side: the NIF's check, decryption
%%% and plan comparison with values made by the age CLI, and what
%%% bc_gitops_secrets does to keep plaintexts out of errors and printed
%%% state.
-module(bc_gitops_secrets_tests).

-include_lib("eunit/include/eunit.hrl").
-include("bc_gitops.hrl").

%% An identity, its recipient, and another identity's recipient, in a
%% fresh directory.
setup() ->
    Dir = bc_gitops_test_util:tmp_dir("eunit_secrets"),
    {Key, Recipient} = bc_gitops_test_keys:age_key(Dir, "node.key"),
    {_, Other} = bc_gitops_test_keys:age_key(Dir, "other.key"),
    #{dir => Dir, key => unicode:characters_to_binary(Key), recipient => Recipient,
      other => Other,
      enc => fun(Plain) -> bc_gitops_test_keys:age_encrypt(Dir, Recipient, Plain) end}.

secrets_test_() ->
    {setup, fun setup/0, fun(#{dir := Dir}) -> bc_gitops_test_util:rm_rf(Dir) end,
     fun(S) ->
             [{"check without decrypting", fun() -> check(S) end},
              {"reveal: terms, bytes, errors", fun() -> reveal(S) end},
              {"plan compares plaintexts", fun() -> plan(S) end},
              {"with_env scrubs what comes back", fun() -> with_env(S) end},
              {"with_revealed decrypts each env map", fun() -> with_revealed(S) end}]
     end}.

check(#{enc := Enc}) ->
    ?assertEqual(ok, bc_gitops_secrets:check(Enc(<<"x">>))),
    ?assertMatch({error, <<"not a well-formed armored age file", _/binary>>},
                 bc_gitops_secrets:check(<<"hunter2">>)).

reveal(#{enc := Enc, key := Key, dir := Dir, other := Other}) ->
    Env = #{password => {age, Enc(<<"hunter2">>)},
            pool => {age, Enc(<<"[{size, 4}, {name, \"p\"}].">>)},
            port => 8080},
    ?assertEqual({ok, #{password => <<"hunter2">>, pool => [{size, 4}, {name, "p"}], port => 8080}},
                 bc_gitops_nif:env_reveal(Env, Key)),
    Foreign = #{password => {age, bc_gitops_test_keys:age_encrypt(Dir, Other, <<"canary">>)}},
    {error, {password, no_matching_identity, Message}} = bc_gitops_nif:env_reveal(Foreign, Key),
    ?assertNotEqual(nomatch, binary:match(Message, Key)),
    ?assertEqual(nomatch, binary:match(Message, <<"canary">>)),
    Missing = <<Key/binary, ".missing">>,
    ?assertMatch({error, {password, identity, _}}, bc_gitops_nif:env_reveal(Env, Missing)).

plan(#{enc := Enc, key := Key}) ->
    Spec = fun(Env) -> #app_spec{name = a, version = <<"1">>, source = #source_spec{type = hex},
                                 env = Env} end,
    State = fun(Env) -> #app_state{name = a, version = <<"1">>, status = running, env = Env} end,
    Old = #{password => {age, Enc(<<"hunter2">>)}, port => 1},
    Again = #{password => {age, Enc(<<"hunter2">>)}, port => 1},
    New = #{password => {age, Enc(<<"hunter3">>)}, port => 1},
    Opts = #{age_identity => Key},
    %% Encrypted again: no change. A new plaintext: a reconfigure.
    ?assertEqual({ok, #{actions => [], blocked => []}},
                 bc_gitops_plan:plan([Spec(Again)], [State(Old)], [], Opts)),
    ?assertMatch({ok, #{actions := [{reconfigure, _}]}},
                 bc_gitops_plan:plan([Spec(New)], [State(Old)], [], Opts)),
    %% Without the identity, or against a value changed on the node, the
    %% ciphertexts differ: a reconfigure.
    ?assertMatch({ok, #{actions := [{reconfigure, _}]}},
                 bc_gitops_plan:plan([Spec(Again)], [State(Old)], [])),
    ?assertMatch({ok, #{actions := [{reconfigure, _}]}},
                 bc_gitops_plan:plan([Spec(Again)], [State(Old#{password => {age, changed}})],
                                     [], Opts)),
    %% Any other difference is still one.
    ?assertMatch({ok, #{actions := [{reconfigure, _}]}},
                 bc_gitops_plan:plan([Spec(Again#{port => 2})], [State(Old)], [], Opts)).

with_env(#{enc := Enc, key := Key}) ->
    ok = application:set_env(bc_gitops, age_identity, Key),
    try
        Env = #{password => {age, Enc(<<"canary-42">>)}, user => <<"bob">>},
        %% What the function returns, with the value in it, comes back
        %% scrubbed: as a term, inside a binary and inside a string.
        Result = bc_gitops_secrets:with_env(
                   app, Env,
                   fun(#{password := P, user := <<"bob">>}) ->
                           {error, {refused, P, <<"pw=", P/binary, ";">>,
                                    "pw=" ++ binary_to_list(P)}}
                   end),
        ?assertEqual({error, {refused, '*secret*', <<"pw=*secret*;">>, "pw=*secret*"}}, Result),
        %% A raise: reason and stack scrubbed.
        Raised = try bc_gitops_secrets:with_env(app, Env, fun(#{password := P}) -> error({bad, P}) end)
                 catch error:R:St -> {R, St}
                 end,
        ?assertMatch({{bad, '*secret*'}, [_ | _]}, Raised),
        ?assertEqual(nomatch, string:find(io_lib:format("~p", [Raised]), "canary")),
        %% Nothing encrypted: no NIF call, no scrubbing.
        ?assertEqual(#{x => 1}, bc_gitops_secrets:with_env(app, #{x => 1}, fun(E) -> E end)),
        %% No identity: the app, the key and the file, no value.
        ok = application:unset_env(bc_gitops, age_identity),
        {error, {secret, #{app := app, key := password, identity := undefined}}} =
            bc_gitops_secrets:reveal(app, Env)
    after
        application:unset_env(bc_gitops, age_identity)
    end.

with_revealed(#{enc := Enc, key := Key}) ->
    ok = application:set_env(bc_gitops, age_identity, Key),
    try
        Old = #{password => {age, Enc(<<"old-secret">>)}},
        New = #{password => {age, Enc(<<"new-secret">>)}, port => 1},
        Args = [app, ["ebin"], {Old, New}],
        ?assertEqual({error, {seen, [app, ["ebin"], {#{password => '*secret*'},
                                                     #{password => '*secret*', port => 1}}]}},
                     bc_gitops_secrets:with_revealed(
                       app, Args,
                       fun([app, ["ebin"], {#{password := <<"old-secret">>},
                                            #{password := <<"new-secret">>, port := 1}}] = Plain) ->
                               {error, {seen, Plain}}
                       end))
    after
        application:unset_env(bc_gitops, age_identity)
    end.

mask_test() ->
    State = {st, #{repo_url => <<"u">>, git_token => <<"t0ken">>, ssh_passphrase => "pp"},
             [#app_spec{name = a, env = #{p => {age, <<"-----BEGIN AGE ENCRYPTED FILE-----x">>}}}],
             {age, 42}},
    Masked = bc_gitops_secrets:mask(State),
    Text = lists:flatten(io_lib:format("~p", [Masked])),
    ?assertEqual(nomatch, string:find(Text, "t0ken")),
    ?assertEqual(nomatch, string:find(Text, "\"pp\"")),
    ?assertEqual(nomatch, string:find(Text, "BEGIN AGE")),
    ?assertMatch({st, #{repo_url := <<"u">>, git_token := '*secret*'}, [_], {age, 42}}, Masked),
    %% format_status/1 masks state, message and reason, and leaves the rest.
    ?assertEqual(#{state => Masked, message => Masked, reason => normal, other => State},
                 bc_gitops_secrets:format_status(#{state => State, message => State,
                                                   reason => normal, other => State})),
    [?assertMatch(#{state := {st, #{git_token := '*secret*'}, _, _}},
                  M:format_status(#{state => State}))
     || M <- [bc_gitops_reconciler, bc_gitops_coordinator, bc_gitops_cluster,
              bc_gitops_health_monitor]].

scrub_test() ->
    ?assertEqual({a, "x"}, bc_gitops_secrets:scrub({a, "x"}, [])),
    %% Short values are replaced where they are whole terms only.
    ?assertEqual({'*secret*', <<"ab-ab">>}, bc_gitops_secrets:scrub({<<"ab">>, <<"ab-ab">>}, [<<"ab">>])),
    ?assertEqual([1, '*secret*' | tail], bc_gitops_secrets:scrub([1, {k, v} | tail], [{k, v}])).

observed_test() ->
    Sealed = {age, <<"-----BEGIN AGE ENCRYPTED FILE-----x">>},
    Env = #{password => Sealed, port => 1, unset => 2},
    Live = #{password => <<"hunter2">>, port => 1},
    Prints = bc_gitops_secrets:fingerprint(Env, Live),
    ?assertEqual([password], maps:keys(Prints)),
    ?assertEqual(#{password => Sealed, port => 1}, bc_gitops_secrets:observed(Env, Live, Prints)),
    %% Changed by hand: seen, not shown. Without a digest: never shown.
    ByHand = Live#{password => <<"by hand">>},
    ?assertEqual(#{password => {age, changed}, port => 1},
                 bc_gitops_secrets:observed(Env, ByHand, Prints)),
    ?assertEqual(#{password => {age, changed}, port => 1},
                 bc_gitops_secrets:observed(Env, Live, #{})).

%% A guest gets its env decrypted by the host: every env map in the
%% arguments, at any depth; what comes back is scrubbed of the plaintexts.
with_revealed_without_secrets_test() ->
    Args = [app, #{port => 1}, {#{a => 1}, #{b => 2}}],
    ?assertEqual({ran, Args}, bc_gitops_secrets:with_revealed(app, Args, fun(A) -> {ran, A} end)).

with_revealed_error_names_the_key_test() ->
    %% No age_identity in this node's configuration: the first encrypted
    %% key is named, the call is not made.
    Args = [app, {#{}, #{password => {age, <<"-----BEGIN AGE ENCRYPTED FILE-----x">>}}}],
    ?assertMatch({error, {secret, #{app := app, key := password, kind := identity}}},
                 bc_gitops_secrets:with_revealed(app, Args, fun(_) -> error(called) end)).
