// French and English. The language comes from the browser (navigator.languages) unless the user
// picked one with the switch (kept in localStorage: a preference, not a secret).
// Every text goes through textContent: strings here are templates, never HTML.

const STRINGS = {
  en: {
    skip_to_content: "Skip to content",
    switch_to: "Français",
    switch_label: "Afficher la page en français",
    join_heading: "Backup conference",
    status_heading: "Status",
    call_heading: "Conference",
    you_heading: "You",
    name_label: "Your name",
    name_missing: "Please type your name: the others will see it.",
    kind_legend: "Join with",
    kind_video: "Video and sound",
    kind_audio: "Sound only",
    camera_label: "Camera",
    devices_legend: "Camera and microphone",
    st_retrying: "Cannot connect sound and video yet. Trying again in {s} s (attempt {n})…",
    st_retrying_now: "Connecting sound and video…",
    microphone_label: "Microphone",
    mic_level: "Microphone level",
    mute_mic: "Mute microphone",
    unmute_mic: "Unmute microphone",
    mute_cam: "Turn camera off",
    unmute_cam: "Turn camera on",
    join: "Join",
    leave: "Leave",
    retry_now: "Try again now",
    preview_off: "Camera off",
    remote_placeholder: "The conference will appear here once you have joined.",
    remote_label: "Conference video",
    remote_audio_only: "You are connected with sound only.",
    unmute_remote: "Turn on the conference sound",
    hotline_call: "If it is urgent, call the Backup+ hotline:",
    hotline_questions: "Questions? The Backup+ hotline:",
    st_loading: "Loading the conference…",
    st_idle: "Check your name, camera and microphone, then press Join.",
    st_joining: "Joining the conference…",
    st_connecting_media: "Connecting sound and video…",
    st_turn: "Connecting through the company firewall (TURN)…",
    st_turn_connected: "Connected through the company firewall (TURN relay).",
    st_connected: "You are in the conference.",
    st_connected_audio: "You are in the conference, with sound only.",
    st_left: "You left the conference. Press Join to come back.",
    st_removed: "You were disconnected from the conference (by the hotline, or after a long loss of connection). Press Join to come back.",
    st_reconnecting: "Connection lost. Reconnecting in {s} s (attempt {n})…",
    st_reconnecting_now: "Connection lost. Reconnecting…",
    st_reconnect_long: "Still trying to reconnect. If this goes on, call the hotline: {phone}.",
    downgraded: "All {n} video places are taken: you joined with audio. You can hear everyone and they hear you.",
    st_refused: "You could not join: no place is free right now.",
    refused_why: "There is no free place in this backup conference right now: {in_use} of {capacity} {kind} places are in use.",
    refused_why_all: "There is no free place in this backup conference right now: all {video} video places and all {audio} audio places are taken.",
    refused_why_reserved: "There is no free place for you right now: the remaining places are kept for other meetings of your company.",
    refused_retry: "We will try again automatically in {s} s. You can also press “Try again now”.",
    kind_word_audio: "sound",
    kind_word_video: "video",
    ended_text: "This backup conference has ended: your own video system is working again. Please use your usual meeting room or link. You can close this page.",
    ended_closed: "This backup conference was closed by the hotline. You can close this page.",
    link_invalid: "This join link is no longer valid. Please ask the person who invited you for a new link.",
    error_generic: "Something went wrong: {detail}",
    device_denied: "The browser was not allowed to use your camera or microphone. You can still join to watch and listen; to speak, allow access in the address bar and press Join again.",
    device_missing: "No camera or microphone was found. You can still join to watch and listen.",
    device_failed: "Your camera or microphone could not be started ({detail}).",
    window_until: "The hotline has planned the end of this backup conference for {when} ({left} left).",
    window_soon: "This backup conference ends in {left}, at {when}, as the hotline planned. Please finish your meeting.",
    window_over: "The planned end of this backup conference has come.",
    st_preempted: "A more important meeting of your company needed your place.",
    preempted_text: "Your place in this backup conference was given to a more important meeting of your company (the backup service has a limited number of places). You are no longer connected. You can try to join again later, or call the hotline.",
    rejoin: "Join again",
    ended_planned: "This backup conference has ended at the time the hotline planned. You can close this page.",
    default_device: "Default",
    device_n: "{kind} {n}",
    title_with: "{title} — Backup+",
    // console
    console_heading: "Hotline console",
    sign_out: "Sign out",
    login_heading: "Operator sign-in",
    token_label: "Operator token",
    token_help: "Paste your operator token and press Enter. It is kept in this tab only and forgotten when you close it.",
    sign_in: "Sign in",
    token_refused: "This token was refused. Check it and try again.",
    token_forbidden: "This token is valid but not allowed to use the console.",
    conn_ok: "Up to date — {time}",
    conn_error: "Cannot reach the broker ({detail}). Retrying…",
    declare_heading: "Declare an outage",
    contract_label: "Contract",
    serial_label: "Equipment serial number",
    priority_label: "Priority",
    prio_urgent: "Urgent",
    prio_medium: "Medium",
    prio_low: "Low",
    site_label: "Site",
    contact_label: "Contact",
    reported_label: "Call received at (Paris time)",
    reported_help: "Leave empty for now.",
    description_label: "Description",
    declare: "Declare",
    declared: "Outage declared for {contract} / {serial}: ticket {ticket}.",
    sla_preview: "If taken at {taken}: acknowledge by {ack}, restore by {restore} (Paris time).",
    outages_heading: "Outages",
    only_active: "Active only",
    no_outages: "No outage to show.",
    outage_title: "{contract} · {serial}",
    ticket_line: "Ticket {number} · {priority} · {site} · {contact}",
    state_active: "Active",
    state_restored: "Restored",
    state_expired: "Expired",
    usage_video: "Video {used} / {cap}",
    usage_audio: "Audio {used} / {cap}",
    ack_deadline: "Acknowledge by",
    restore_deadline: "Restore by",
    window_ends: "Planned end",
    due_in: "{when} — in {left}",
    overdue_by: "{when} — OVERDUE by {left}",
    passed: "{when} — passed",
    restore: "Restore",
    restore_confirm_q: "The client's server is back? Everyone will be disconnected.",
    restore_yes: "Yes, server is back",
    cancel: "Cancel",
    extend_label: "Planned end of Backup+ (Paris time)",
    extend: "Set planned end",
    extended: "Planned end set: participants are warned 10 minutes before.",
    conferences_heading: "Conferences",
    conf_title_label: "Title",
    conf_priority_label: "Priority (1 = most important)",
    reserve_video_label: "Reserved video",
    reserve_audio_label: "Reserved audio",
    create_conf: "Create conference",
    join_link: "Join link",
    copy: "Copy",
    copied: "Copied",
    copy_failed: "Select the link and copy it",
    conf_meta: "priority {priority} · reserved {rv} video, {ra} audio · {n} participant(s)",
    participants_heading: "Participants",
    p_name: "Name",
    p_kind: "Kind",
    p_state: "State",
    actions: "Actions",
    remove: "Remove",
    remove_label: "Remove {name}",
    no_participants: "Nobody has joined yet.",
    kind_audio_short: "audio",
    kind_video_short: "video",
    downgraded_short: "asked for video, got audio (video full)",
    pstate_admitted: "joining",
    pstate_connected: "connected",
    pstate_left: "left",
    pstate_failed: "connection failed",
    pstate_expired: "timed out",
    pstate_preempted: "lost its place",
    pstate_ended: "ended",
    // problem codes
    err_contract_not_found: "No contract with this number.",
    err_outage_already_active: "An outage is already active for this equipment (outage {outage_id}).",
    err_outage_not_active: "This outage is no longer active.",
    err_reserve_exceeds_capacity: "These reservations would go past the outage's capacity (8 audio, 10 video in total).",
    err_validation: "Please check: {fields}",
    err_network: "The broker cannot be reached. Check your connection.",
    reason_contract_not_started: "Not eligible: the contract has not started yet.",
    reason_contract_expired: "Not eligible: the contract has expired.",
    reason_contract_suspended: "Not eligible: the contract is suspended.",
    reason_contract_terminated: "Not eligible: the contract was terminated.",
    reason_equipment_not_on_contract: "Not eligible: this serial number is not on the contract.",
    reason_equipment_not_videoconference: "Not eligible: this equipment is not videoconferencing equipment (video bridge or endpoint).",
    reason_warranty_expired: "Not eligible: the equipment's warranty has expired.",
    reason_unknown: "Not eligible ({reason}).",
    company_label: "Company (if not the contract's)",
    model_label: "Model (if not the equipment's)",
    live_off: "",
    live_connecting: "Connecting to the live feed…",
    live_sse: "Live",
    live_reconnecting: "Live feed interrupted: reconnecting…",
    live_polling: "Live feed unavailable: refreshing every 2 s",
    tickets_heading: "Tickets",
    ticket_query_label: "Ticket number or contract",
    search: "Search",
    renewals_heading: "Contracts due for renewal",
    renewals_help: "Clause 7: the renewal is offered from two months before the end of the term.",
    no_renewals: "No contract is due for renewal.",
    renewal_line: "term ends {end}, renewal to offer since {from}",
    renewal_suspended: "(maintenance suspended from {from})",
    restore_overdue_mark: "Restore overdue",
    ack_by_label: "Acknowledged by",
    acknowledge: "Acknowledge",
    ack_name_missing: "Type your name to acknowledge.",
    acked_at: "Acknowledged at {when} by {by}.",
    acked_late: "Acknowledged at {when} by {by}, after the deadline.",
    ack_done: "{when} — met",
    ack_done_late: "{when} — missed",
    plan_clear: "Clear planned end",
    plan_missing: "Choose the date and time of the planned end.",
    plan_cleared: "Planned end cleared: Backup+ lasts until the server is restored.",
    no_planned_end: "No planned end — until restored",
    ended_restored: "Restored on {when}: the client's server is back.",
    ended_planned_end: "Ended at its planned end, {when}.",
    decisions_heading: "Last decisions",
    no_decisions: "No decision yet.",
    max_video_label: "Max video",
    max_audio_label: "Max audio",
    no_max: "none",
    save: "Save",
    saved: "Saved.",
    conf_ports: "holds {hv} of {cv} video and {ha} of {ca} audio ports · max {mv} video, {ma} audio",
    field_required: "is required",
    missing_fields: "Clause 3-3 asks for this on every call; please fill in: {fields}.",
    mismatch_company: "Noted: the company given (“{given}”) differs from the contract's (“{known}”).",
    mismatch_model: "Noted: the model given (“{given}”) differs from the equipment's (“{known}”).",
    refused_ticket: "Ticket {ticket}: refused. {why}",
    ticket_received: "received {when}",
    ticket_outage: "Outage {outage} opened.",
    ticket_refused: "Refused: {why}",
    ticket_pending: "Being handled.",
    no_ticket: "No ticket found for “{query}”.",
    someone: "a participant",
    err_invalid_window: "The planned end must be in the future.",
    err_invalid_reported_at: "The call time must be within the last 7 days (and not more than 5 minutes ahead).",
    ev_declared: "outage declared (ticket {ticket})",
    ev_acknowledged: "{by} acknowledged the outage",
    ev_acknowledged_late: "{by} acknowledged the outage, after the deadline",
    ev_conference_created: "conference created (priority {priority})",
    ev_conference_changed: "conference changed (priority {priority})",
    ev_conference_closed: "conference closed ({participants} disconnected)",
    ev_admitted: "{name} joined ({kind})",
    ev_downgraded: "{name} joined with audio: video full",
    ev_preempted: "{name} lost the {kind} place to a more important meeting",
    ev_refused: "{name} refused ({code})",
    ev_refused_full: "{name} refused: {kind} full",
    ev_refused_max: "{name} refused: the conference's {kind} max is reached",
    ev_refused_rate: "{name} refused: joining too fast",
    ev_refused_ended: "{name} refused: the outage is over",
    ev_refused_closed: "{name} refused: conference closed",
    ev_left: "{name} left",
    ev_left_state: "{name} disconnected ({state})",
    ev_lease_expired: "{name} timed out (no sound or video)",
    ev_readmitted: "{name} reconnected",
    ev_readmission_refused: "{name} could not reconnect: no place",
    ev_restored: "restored by {by} ({participants} disconnected)",
    ev_restored_anon: "restored ({participants} disconnected)",
    ev_planned_end: "ended at the planned end ({participants} disconnected)",
    ev_planned_end_set: "planned end set for {when}",
    ev_planned_end_cleared: "planned end cleared: until restored",
    ev_deadline_missed_ack: "acknowledgement deadline missed",
    ev_deadline_missed_restore: "restore deadline missed",
    ev_ledger_repaired: "ledger audit: {repairs} repair(s)",
    ev_unknown: "{type}",
  },
  fr: {
    skip_to_content: "Aller au contenu",
    switch_to: "English",
    switch_label: "Show this page in English",
    join_heading: "Conférence de secours",
    status_heading: "État",
    call_heading: "Conférence",
    you_heading: "Vous",
    name_label: "Votre nom",
    name_missing: "Indiquez votre nom : les autres participants le verront.",
    kind_legend: "Participer avec",
    kind_video: "Vidéo et son",
    kind_audio: "Son seulement",
    camera_label: "Caméra",
    devices_legend: "Caméra et micro",
    st_retrying: "Le son et la vidéo ne sont pas encore connectés. Nouvel essai dans {s} s (essai {n})…",
    st_retrying_now: "Connexion du son et de la vidéo…",
    microphone_label: "Micro",
    mic_level: "Niveau du micro",
    mute_mic: "Couper le micro",
    unmute_mic: "Activer le micro",
    mute_cam: "Couper la caméra",
    unmute_cam: "Activer la caméra",
    join: "Rejoindre",
    leave: "Quitter",
    retry_now: "Réessayer maintenant",
    preview_off: "Caméra coupée",
    remote_placeholder: "La conférence s’affichera ici une fois que vous l’aurez rejointe.",
    remote_label: "Vidéo de la conférence",
    remote_audio_only: "Vous êtes connecté avec le son seulement.",
    unmute_remote: "Activer le son de la conférence",
    hotline_call: "En cas d’urgence, appelez l’assistance Backup+ :",
    hotline_questions: "Une question ? L’assistance Backup+ :",
    st_loading: "Chargement de la conférence…",
    st_idle: "Vérifiez votre nom, votre caméra et votre micro, puis appuyez sur Rejoindre.",
    st_joining: "Connexion à la conférence…",
    st_connecting_media: "Connexion du son et de la vidéo…",
    st_turn: "Connexion à travers le pare-feu de l’entreprise (TURN)…",
    st_turn_connected: "Connecté à travers le pare-feu de l’entreprise (relais TURN).",
    st_connected: "Vous êtes dans la conférence.",
    st_connected_audio: "Vous êtes dans la conférence, avec le son seulement.",
    st_left: "Vous avez quitté la conférence. Appuyez sur Rejoindre pour revenir.",
    st_removed: "Vous avez été déconnecté de la conférence (par l’assistance, ou après une longue coupure). Appuyez sur Rejoindre pour revenir.",
    st_reconnecting: "Connexion perdue. Reconnexion dans {s} s (essai {n})…",
    st_reconnecting_now: "Connexion perdue. Reconnexion…",
    st_reconnect_long: "Nous essayons toujours de vous reconnecter. Si cela dure, appelez l’assistance : {phone}.",
    downgraded: "Les {n} places vidéo sont toutes prises : vous avez rejoint avec le son seulement. Vous entendez tout le monde et tout le monde vous entend.",
    st_refused: "Vous n’avez pas pu rejoindre : aucune place n’est libre pour le moment.",
    refused_why: "Il n’y a plus de place libre dans cette conférence de secours : {in_use} places {kind} sur {capacity} sont occupées.",
    refused_why_all: "Il n’y a plus de place libre dans cette conférence de secours : les {video} places vidéo et les {audio} places audio sont toutes prises.",
    refused_why_reserved: "Il n’y a pas de place libre pour vous en ce moment : les places restantes sont réservées à d’autres réunions de votre entreprise.",
    refused_retry: "Nous réessaierons automatiquement dans {s} s. Vous pouvez aussi appuyer sur « Réessayer maintenant ».",
    kind_word_audio: "audio",
    kind_word_video: "vidéo",
    ended_text: "Cette conférence de secours est terminée : votre propre système de visioconférence fonctionne de nouveau. Utilisez votre salle ou votre lien habituel. Vous pouvez fermer cette page.",
    ended_closed: "Cette conférence de secours a été fermée par l’assistance. Vous pouvez fermer cette page.",
    link_invalid: "Ce lien n’est plus valide. Demandez un nouveau lien à la personne qui vous a invité.",
    error_generic: "Une erreur s’est produite : {detail}",
    device_denied: "Le navigateur n’a pas le droit d’utiliser votre caméra ou votre micro. Vous pouvez quand même rejoindre pour voir et écouter ; pour parler, autorisez l’accès dans la barre d’adresse et appuyez de nouveau sur Rejoindre.",
    device_missing: "Aucune caméra ni aucun micro trouvé. Vous pouvez quand même rejoindre pour voir et écouter.",
    device_failed: "Impossible de démarrer votre caméra ou votre micro ({detail}).",
    window_until: "L’assistance a prévu la fin de cette conférence de secours le {when} (encore {left}).",
    window_soon: "Cette conférence de secours se termine dans {left}, à {when}, comme prévu par l’assistance. Merci de conclure votre réunion.",
    window_over: "La fin prévue de cette conférence de secours est arrivée.",
    st_preempted: "Une réunion plus importante de votre entreprise avait besoin de votre place.",
    preempted_text: "Votre place dans cette conférence de secours a été donnée à une réunion plus importante de votre entreprise (le service de secours a un nombre de places limité). Vous n’êtes plus connecté. Vous pourrez essayer de rejoindre plus tard, ou appeler l’assistance.",
    rejoin: "Rejoindre à nouveau",
    ended_planned: "Cette conférence de secours s’est terminée à l’heure prévue par l’assistance. Vous pouvez fermer cette page.",
    default_device: "Par défaut",
    device_n: "{kind} {n}",
    title_with: "{title} — Backup+",
    console_heading: "Console de l’assistance",
    sign_out: "Se déconnecter",
    login_heading: "Connexion opérateur",
    token_label: "Jeton opérateur",
    token_help: "Collez votre jeton opérateur et appuyez sur Entrée. Il n’est gardé que dans cet onglet et oublié à sa fermeture.",
    sign_in: "Se connecter",
    token_refused: "Ce jeton a été refusé. Vérifiez-le et réessayez.",
    token_forbidden: "Ce jeton est valide mais n’a pas accès à la console.",
    conn_ok: "À jour — {time}",
    conn_error: "Le broker ne répond pas ({detail}). Nouvel essai…",
    declare_heading: "Déclarer une panne",
    contract_label: "Contrat",
    serial_label: "Numéro de série de l’équipement",
    priority_label: "Priorité",
    prio_urgent: "Urgente",
    prio_medium: "Moyenne",
    prio_low: "Basse",
    site_label: "Site",
    contact_label: "Contact",
    reported_label: "Appel reçu à (heure de Paris)",
    reported_help: "Laisser vide pour maintenant.",
    description_label: "Description",
    declare: "Déclarer",
    declared: "Panne déclarée pour {contract} / {serial} : ticket {ticket}.",
    sla_preview: "Prise en charge à {taken} : acquitter avant {ack}, rétablir avant {restore} (heure de Paris).",
    outages_heading: "Pannes",
    only_active: "Actives seulement",
    no_outages: "Aucune panne à afficher.",
    outage_title: "{contract} · {serial}",
    ticket_line: "Ticket {number} · {priority} · {site} · {contact}",
    state_active: "Active",
    state_restored: "Rétablie",
    state_expired: "Expirée",
    usage_video: "Vidéo {used} / {cap}",
    usage_audio: "Audio {used} / {cap}",
    ack_deadline: "Acquitter avant",
    restore_deadline: "Rétablir avant",
    window_ends: "Fin prévue",
    due_in: "{when} — dans {left}",
    overdue_by: "{when} — EN RETARD de {left}",
    passed: "{when} — passé",
    restore: "Rétablir",
    restore_confirm_q: "Le serveur du client fonctionne de nouveau ? Tous les participants seront déconnectés.",
    restore_yes: "Oui, le serveur est revenu",
    cancel: "Annuler",
    extend_label: "Fin prévue de Backup+ (heure de Paris)",
    extend: "Prévoir la fin",
    extended: "Fin prévue enregistrée : les participants sont prévenus 10 minutes avant.",
    conferences_heading: "Conférences",
    conf_title_label: "Titre",
    conf_priority_label: "Priorité (1 = la plus importante)",
    reserve_video_label: "Vidéo réservée",
    reserve_audio_label: "Audio réservé",
    create_conf: "Créer la conférence",
    join_link: "Lien de connexion",
    copy: "Copier",
    copied: "Copié",
    copy_failed: "Sélectionnez le lien et copiez-le",
    conf_meta: "priorité {priority} · réservé {rv} vidéo, {ra} audio · {n} participant(s)",
    participants_heading: "Participants",
    p_name: "Nom",
    p_kind: "Type",
    p_state: "État",
    actions: "Actions",
    remove: "Retirer",
    remove_label: "Retirer {name}",
    no_participants: "Personne n’a encore rejoint.",
    kind_audio_short: "audio",
    kind_video_short: "vidéo",
    downgraded_short: "a demandé la vidéo, a reçu l’audio (vidéo complète)",
    pstate_admitted: "en connexion",
    pstate_connected: "connecté",
    pstate_left: "parti",
    pstate_failed: "connexion échouée",
    pstate_expired: "délai dépassé",
    pstate_preempted: "place cédée",
    pstate_ended: "terminé",
    err_contract_not_found: "Aucun contrat avec ce numéro.",
    err_outage_already_active: "Une panne est déjà active pour cet équipement (panne {outage_id}).",
    err_outage_not_active: "Cette panne n’est plus active.",
    err_reserve_exceeds_capacity: "Ces réservations dépasseraient la capacité de la panne (8 audio, 10 vidéo au total).",
    err_validation: "À vérifier : {fields}",
    err_network: "Le broker est injoignable. Vérifiez votre connexion.",
    reason_contract_not_started: "Non éligible : le contrat n’a pas encore commencé.",
    reason_contract_expired: "Non éligible : le contrat est arrivé à échéance.",
    reason_contract_suspended: "Non éligible : le contrat est suspendu.",
    reason_contract_terminated: "Non éligible : le contrat a été résilié.",
    reason_equipment_not_on_contract: "Non éligible : ce numéro de série ne figure pas au contrat.",
    reason_equipment_not_videoconference: "Non éligible : cet équipement n’est pas un équipement de visioconférence (pont ou terminal vidéo).",
    reason_warranty_expired: "Non éligible : la garantie de l’équipement a expiré.",
    reason_unknown: "Non éligible ({reason}).",
    company_label: "Société (si autre que celle du contrat)",
    model_label: "Modèle (si autre que celui de l’équipement)",
    live_off: "",
    live_connecting: "Connexion au direct…",
    live_sse: "En direct",
    live_reconnecting: "Direct interrompu : reconnexion…",
    live_polling: "Direct indisponible : mise à jour toutes les 2 s",
    tickets_heading: "Tickets",
    ticket_query_label: "Numéro de ticket ou contrat",
    search: "Rechercher",
    renewals_heading: "Contrats à renouveler",
    renewals_help: "Article 7 : le renouvellement est proposé à partir de deux mois avant la fin de la période.",
    no_renewals: "Aucun contrat à renouveler.",
    renewal_line: "fin de période le {end}, renouvellement à proposer depuis le {from}",
    renewal_suspended: "(maintenance suspendue à partir du {from})",
    restore_overdue_mark: "Rétablissement en retard",
    ack_by_label: "Pris en charge par",
    acknowledge: "Prendre en charge",
    ack_name_missing: "Indiquez votre nom pour prendre en charge.",
    acked_at: "Prise en charge le {when} par {by}.",
    acked_late: "Prise en charge le {when} par {by}, après l’échéance.",
    ack_done: "{when} — respectée",
    ack_done_late: "{when} — dépassée",
    plan_clear: "Annuler la fin prévue",
    plan_missing: "Choisissez la date et l’heure de la fin prévue.",
    plan_cleared: "Fin prévue annulée : Backup+ dure jusqu’au rétablissement du serveur.",
    no_planned_end: "Pas de fin prévue — jusqu’au rétablissement",
    ended_restored: "Rétablie le {when} : le serveur du client fonctionne de nouveau.",
    ended_planned_end: "Terminée à sa fin prévue, le {when}.",
    decisions_heading: "Dernières décisions",
    no_decisions: "Aucune décision pour l’instant.",
    max_video_label: "Vidéo max",
    max_audio_label: "Audio max",
    no_max: "aucun",
    save: "Enregistrer",
    saved: "Enregistré.",
    conf_ports: "occupe {hv} des {cv} places vidéo et {ha} des {ca} places audio · max {mv} vidéo, {ma} audio",
    field_required: "est obligatoire",
    missing_fields: "L’article 3-3 demande ces informations à chaque appel ; à compléter : {fields}.",
    mismatch_company: "Noté : la société indiquée (« {given} ») diffère de celle du contrat (« {known} »).",
    mismatch_model: "Noté : le modèle indiqué (« {given} ») diffère de celui de l’équipement (« {known} »).",
    refused_ticket: "Ticket {ticket} : refusé. {why}",
    ticket_received: "reçu le {when}",
    ticket_outage: "Panne {outage} ouverte.",
    ticket_refused: "Refusé : {why}",
    ticket_pending: "En cours de traitement.",
    no_ticket: "Aucun ticket trouvé pour « {query} ».",
    someone: "un participant",
    err_invalid_window: "La fin prévue doit être dans le futur.",
    err_invalid_reported_at: "L’heure de l’appel doit être dans les 7 derniers jours (et pas plus de 5 minutes en avance).",
    ev_declared: "panne déclarée (ticket {ticket})",
    ev_acknowledged: "{by} a pris en charge la panne",
    ev_acknowledged_late: "{by} a pris en charge la panne, après l’échéance",
    ev_conference_created: "conférence créée (priorité {priority})",
    ev_conference_changed: "conférence modifiée (priorité {priority})",
    ev_conference_closed: "conférence fermée ({participants} déconnecté(s))",
    ev_admitted: "{name} a rejoint ({kind})",
    ev_downgraded: "{name} a rejoint en audio : vidéo complète",
    ev_preempted: "{name} a cédé sa place {kind} à une réunion plus importante",
    ev_refused: "{name} refusé ({code})",
    ev_refused_full: "{name} refusé : plus de place {kind}",
    ev_refused_max: "{name} refusé : maximum {kind} de la conférence atteint",
    ev_refused_rate: "{name} refusé : connexions trop rapprochées",
    ev_refused_ended: "{name} refusé : la panne est terminée",
    ev_refused_closed: "{name} refusé : conférence fermée",
    ev_left: "{name} est parti",
    ev_left_state: "{name} déconnecté ({state})",
    ev_lease_expired: "{name} : délai dépassé (ni son ni vidéo)",
    ev_readmitted: "{name} s’est reconnecté",
    ev_readmission_refused: "{name} n’a pas pu se reconnecter : plus de place",
    ev_restored: "rétablie par {by} ({participants} déconnecté(s))",
    ev_restored_anon: "rétablie ({participants} déconnecté(s))",
    ev_planned_end: "terminée à la fin prévue ({participants} déconnecté(s))",
    ev_planned_end_set: "fin prévue le {when}",
    ev_planned_end_cleared: "fin prévue annulée : jusqu’au rétablissement",
    ev_deadline_missed_ack: "échéance de prise en charge dépassée",
    ev_deadline_missed_restore: "échéance de rétablissement dépassée",
    ev_ledger_repaired: "audit du registre : {repairs} correction(s)",
    ev_unknown: "{type}",
  },
};

const LANGS = ["en", "fr"];
const STORE_KEY = "backupplus.lang";

function pickLang() {
  const params = new URLSearchParams(location.search);
  const forced = params.get("lang");
  if (forced && LANGS.includes(forced)) return forced;
  try {
    const saved = localStorage.getItem(STORE_KEY);
    if (saved && LANGS.includes(saved)) return saved;
  } catch { /* storage disabled */ }
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).toLowerCase().split("-")[0];
    if (LANGS.includes(base)) return base;
  }
  return "en";
}

let lang = pickLang();
const listeners = [];
// Elements whose text was set with setText(): re-rendered when the language changes.
const dynamic = new Map();

export function getLang() {
  return lang;
}

export function t(key, vars = {}) {
  const table = STRINGS[lang] || STRINGS.en;
  const template = table[key] ?? STRINGS.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined || vars[k] === null ? "" : String(vars[k])));
}

/** Set an element's text from a key (re-rendered on language change); null key clears it. */
export function setText(el, key, vars = {}) {
  if (!el) return;
  if (key === null) {
    dynamic.delete(el);
    el.textContent = "";
    return;
  }
  dynamic.set(el, { key, vars });
  el.textContent = t(key, vars);
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  if (root === document) {
    for (const [el, { key, vars }] of dynamic) {
      if (!el.isConnected) dynamic.delete(el);
      else el.textContent = t(key, vars);
    }
  }
}

export function onLangChange(fn) {
  listeners.push(fn);
}

export function setLang(next) {
  if (!LANGS.includes(next)) return;
  lang = next;
  try {
    localStorage.setItem(STORE_KEY, next);
  } catch { /* storage disabled */ }
  applyI18n();
  for (const fn of listeners) fn(lang);
}

export function setupLangSwitch(button) {
  const render = () => {
    const other = lang === "fr" ? "en" : "fr";
    button.textContent = t("switch_to");
    button.lang = other;
    button.setAttribute("aria-label", t("switch_label"));
    button.dataset.lang = other;
  };
  render();
  onLangChange(render);
  button.addEventListener("click", () => setLang(button.dataset.lang));
}

function locale() {
  return lang === "fr" ? "fr-FR" : "en-GB";
}

/** A date-time for people: "Thu 28 Nov, 12:00". timeZone: undefined = the browser's; withZone adds
 * the offset ("12:00 UTC+1") so a reader abroad is not misled. */
export function fmtDateTime(value, timeZone, withZone = false) {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime())) return "—";
  return new Intl.DateTimeFormat(locale(), {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone,
    ...(withZone ? { timeZoneName: "short" } : {}),
  }).format(d);
}

export function fmtTime(value, timeZone) {
  const d = value instanceof Date ? value : new Date(value);
  return new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone }).format(d);
}

/** "2 d 3 h", "1 h 05 min", "4 min 20 s", "12 s" (French: "2 j 3 h"). */
export function fmtDuration(ms) {
  let s = Math.max(0, Math.round(Math.abs(ms) / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const dayUnit = lang === "fr" ? "j" : "d";
  if (d > 0) return `${d} ${dayUnit} ${h} h`;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m > 0) return `${m} min ${String(s).padStart(2, "0")} s`;
  return `${s} s`;
}

export function translateAll() {
  applyI18n();
}
